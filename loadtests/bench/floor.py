"""The HTTP floor: the least any OpenAI-style front can do in front of the same engine.

Parse the JSON body, decode the image, stream SSE chunks from `VLLMEngine` — no validation,
limits, auth, logging or metrics. The gap between the engine-only ceiling and this server is
what HTTP itself costs on the machine (body parsing, image decoding, socket writes, a load
generator sharing the CPUs); the gap between it and FaceLLM Serve is what our layer adds.
Not a server to deploy: it trusts every request.

    python -m loadtests.bench.floor --model-dir DIR --port 8123
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from loadtests.bench.engine_flags import add_engine_args, engine_config
from model.engine import ChatMessage, GenerationRequest, SamplingOptions
from model.vllm_engine import VLLMEngine


def build_app(engine: VLLMEngine) -> Starlette:
    async def chat(request: Request) -> StreamingResponse:
        body = json.loads(await request.body())
        image_part, text_part = body["messages"][0]["content"]
        data = base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])
        image = Image.open(io.BytesIO(data)).convert("RGB")
        gen = GenerationRequest(
            request_id=uuid.uuid4().hex,
            messages=(ChatMessage(role="user", parts=(image, text_part["text"])),),
            sampling=SamplingOptions(
                max_tokens=body["max_tokens"], temperature=body["temperature"], top_p=body["top_p"]
            ),
        )
        return StreamingResponse(frames(gen), media_type="text/event-stream")

    async def frames(gen: GenerationRequest) -> AsyncIterator[str]:
        """One write per token; the role chunk rides with the first, usage with the last."""
        head = {"id": gen.request_id, "object": "chat.completion.chunk"}

        def event(**fields: object) -> str:
            return f"data: {json.dumps(head | fields)}\n\n"

        pending = event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        async for chunk in engine.generate(gen):
            choice = {"index": 0, "delta": {"content": chunk.text}}
            pending += event(choices=[choice | {"finish_reason": chunk.finish_reason}])
            if chunk.finish_reason is None:
                yield pending
                pending = ""
        usage = {"prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens}
        yield pending + event(choices=[], usage=usage) + "data: [DONE]\n\n"

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.shutdown()

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.floor")
    add_engine_args(p)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    app = build_app(VLLMEngine(engine_config(args)))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":  # vLLM starts EngineCore subprocesses that re-import the main module
    main()
