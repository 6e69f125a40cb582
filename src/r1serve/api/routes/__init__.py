"""One module per feature; each exposes ``router``."""
