"""Text tools every backend shares: chat templates, tokenizers, detokenizer, stops, reasoning."""
