"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp), for the
`torch_caching` and `torch_record_stream` policies. Planning only: nothing imports torch."""
