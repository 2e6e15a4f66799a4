"""ggml-alloc's mechanics, ported rule by rule, with hooks the policies use to decide when a
tensor's bytes may be recycled."""
