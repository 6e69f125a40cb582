"""The upstream engine: another OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama,
r1serve) as the backend of one served model, with replicas."""

from r1serve.engine.upstream.build import build_upstream
from r1serve.engine.upstream.config import UpstreamConfig
from r1serve.engine.upstream.engine import UpstreamEngine

__all__ = ["UpstreamConfig", "UpstreamEngine", "build_upstream"]
