"""The transformers backend: r1serve's own scheduler over a PyTorch model (HF folder or GGUF)."""
