"""The llama.cpp backend: quantized GGUF models through llama.cpp's own server loop (xllamacpp)."""
