"""Batch input files and an SDK client for the in-process app (FakeEngine, SQLite in tmp)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from openai import AsyncOpenAI
from openai.types import Batch

from tests.images import astronaut, data_url

CHAT, FACES = "/v1/chat/completions", "/v1/faces/analyze"


def chat_line(custom_id: str, text: str = "hi", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"messages": [{"role": "user", "content": text}], "max_tokens": 4, **body},
    }


def face_line(custom_id: str, image: str | None = None) -> dict[str, Any]:
    body = {"image": image or data_url(astronaut()), "attributes": ["age_group"]}
    return {"custom_id": custom_id, "method": "POST", "url": FACES, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def sdk(app: FastAPI, key: str = "none") -> AsyncOpenAI:
    """The official client, talking to the app in process."""
    transport = httpx.ASGITransport(app=app)
    http = httpx.AsyncClient(transport=transport, base_url="http://test")
    return AsyncOpenAI(base_url="http://test/v1", api_key=key, http_client=http, max_retries=0)


async def wait_for(
    client: AsyncOpenAI, batch_id: str, statuses: tuple[str, ...], timeout_s: float = 30
) -> Batch:
    """The batch once its status is one of `statuses`; fails past `timeout_s`."""
    return await batch_when(client, batch_id, lambda b: b.status in statuses, timeout_s)


async def batch_when(
    client: AsyncOpenAI, batch_id: str, condition: Callable[[Batch], bool], timeout_s: float = 30
) -> Batch:
    """The batch once `condition` holds for it, polled every 50 ms; fails past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = await client.batches.retrieve(batch_id)
        if condition(batch):
            return batch
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} not as expected within {timeout_s} s: {batch}")


def records(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]
