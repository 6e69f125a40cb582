"""The design r1serve replaces, kept as a baseline: FastAPI + one ``generate`` thread per request.

Each request applies the chat template, starts ``model.generate`` in its own thread with a
``TextIteratorStreamer``, and streams OpenAI chat-completion chunks as the streamer yields text.
No batching, no queue, no memory plan: concurrent requests share the cores and each decode
step reads all the weights once per request. Written plainly on purpose; do not optimise it.

    python bench/reference_server.py --model DIR [--port 8001] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extra field: generate exactly max_tokens


class CountingStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that also counts the generated tokens (for ``usage``)."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=None)
        self.generated = 0
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.generated += int(value.numel())
        self._prompt_seen = True
        super().put(value)


def build_app(model_dir: str, served_name: str) -> FastAPI:
    """The whole server: load once, then one thread per request."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    app = FastAPI()

    def chunk(rid: str, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": served_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    def start(req: ChatRequest) -> tuple[CountingStreamer, int]:
        inputs: Any = tokenizer.apply_chat_template(
            req.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = CountingStreamer(tokenizer)
        kwargs: dict[str, Any] = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=req.max_tokens,
            do_sample=req.temperature > 0,
            pad_token_id=tokenizer.pad_token_id,
        )
        if req.temperature > 0:
            kwargs.update(temperature=req.temperature, top_p=req.top_p)
        if req.ignore_eos:
            kwargs["min_new_tokens"] = req.max_tokens
        threading.Thread(target=model.generate, kwargs=kwargs, daemon=True).start()
        return streamer, int(inputs["input_ids"].shape[-1])

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def events(req: ChatRequest, rid: str) -> Iterator[str]:
        streamer, prompt_tokens = start(req)
        yield chunk(rid, {"role": "assistant", "content": ""})
        for text in streamer:
            if text:
                yield chunk(rid, {"content": text})
        finish = "length" if streamer.generated >= req.max_tokens else "stop"
        yield chunk(rid, {}, finish)
        if req.stream_options and req.stream_options.get("include_usage"):
            body = {
                "id": rid,
                "object": "chat.completion.chunk",
                "model": served_name,
                "choices": [],
                "usage": usage(prompt_tokens, streamer.generated),
            }
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served_name, "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatRequest) -> StreamingResponse | JSONResponse:
        if req.model not in (None, served_name):
            raise HTTPException(404, f"model {req.model} is not served here")
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(events(req, rid), media_type="text/event-stream")
        streamer, prompt_tokens = start(req)
        text = "".join(streamer)
        finish = "length" if streamer.generated >= req.max_tokens else "stop"
        message = {"role": "assistant", "content": text}
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "model": served_name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage(prompt_tokens, streamer.generated),
            }
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The one-thread-per-request baseline server.")
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.served_model_name or args.model.rstrip("/").rsplit("/", 1)[-1]
    uvicorn.run(build_app(args.model, name), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
