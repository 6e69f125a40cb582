"""Clients of an OpenAI-compatible server: the interactive chat and the benchmark."""
