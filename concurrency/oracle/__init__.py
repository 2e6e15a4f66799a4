"""The real ggml as an oracle: LACE graphs exported to ggml through its C API (ctypes), planned
by `ggml_gallocr`, and the offsets read back. Needs the shared libraries of the PyPI package
`llama-cpp-python` (0.3.36 vendors the llama.cpp/ggml LACE ports), built for the CPU."""
