"""The Batch API from the official `openai` client, for the e2e tests: lines, uploads, polls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
from openai.types import Batch

CHAT, FACES = "/v1/chat/completions", "/v1/faces/analyze"
DONE = ("completed", "failed", "cancelled", "expired")


def face_line(custom_id: str, image: str) -> dict[str, object]:
    body = {"image": image, "attributes": ["age_group", "eyewear"]}
    return {"custom_id": custom_id, "method": "POST", "url": FACES, "body": body}


def chat_line(custom_id: str, **body: object) -> dict[str, object]:
    messages = [{"role": "user", "content": f"hello {custom_id}"}]
    body = {"messages": messages, "max_tokens": 4, **body}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def upload(api: openai.OpenAI, lines: list[dict[str, object]]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return api.files.create(file=("input.jsonl", data), purpose="batch").id


def batch_when(
    api: openai.OpenAI, batch_id: str, condition: Callable[[Batch], bool], timeout_s: float = 120
) -> Batch:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = api.batches.retrieve(batch_id)
        if condition(batch):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not as expected within {timeout_s} s: {batch}")


def completed(batch: Batch) -> int:
    return batch.request_counts.completed if batch.request_counts else 0


def lines_of(api: openai.OpenAI, file_id: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in api.files.content(file_id).text.splitlines()]
