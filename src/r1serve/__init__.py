"""r1serve: a self-hosted server for DeepSeek-R1 distilled models and any HF causal LM."""

__version__ = "0.1.0"
