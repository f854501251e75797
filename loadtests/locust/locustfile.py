"""Locust scenarios for FaceLLM Serve: image chat, streamed image chat, face analysis.

Run through `python -m loadtests.locust` (reports, summary, SLO exit code) or directly from the
repository root: `locust -f loadtests/locust/locustfile.py --host http://127.0.0.1:8000`.
Settings: `FACELLM_LOAD_*` (see loadtests/locust/settings.py).

Locust times a streamed request only up to its headers, so the stream scenario times the whole
stream itself and adds two custom entries per request: time to first token ("TTFT", ms) and the
decode rate after it ("TOKENS/S", tokens per second, in the response-time column).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtests.images import face_data_urls
from loadtests.locust.settings import LoadSettings
from loadtests.locust.shape import make_step_shape

SETTINGS = LoadSettings.from_env()
IMAGES = face_data_urls(SETTINGS.images, SETTINGS.image_size)
_next_image = itertools.cycle(IMAGES)

CHAT_PATH = "/v1/chat/completions"
FACES_PATH = "/v1/faces/analyze"
TTFT_TYPE = "TTFT"
RATE_TYPE = "TOKENS/S"
MAX_SSE_LINES = 100_000  # a bound on one stream, far above max_tokens events

if SETTINGS.step is not None:
    StepLoadShape = make_step_shape(SETTINGS.step)  # locust picks up shape classes found here


def chat_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": next(_next_image)}},
                    {"type": "text", "text": SETTINGS.prompt},
                ],
            }
        ],
        "max_tokens": SETTINGS.max_tokens,
    }
    if SETTINGS.model:
        body["model"] = SETTINGS.model
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def sse_events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE response, each as soon as its line arrives, up to `[DONE]`.

    Line by line from geventhttpclient's own response: locust's `iter_content` reads fixed-size
    blocks and so holds back every event until 4 KiB have arrived, which would hide the TTFT.
    """
    raw = response._response
    for _ in range(MAX_SSE_LINES):
        line = raw.readline(b"\n")
        if not line:
            return
        data = line.decode("utf-8", "replace").removeprefix("data:").strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


def is_token_event(event: dict[str, Any]) -> bool:
    """True for a chunk carrying generated text (not the opening role-only chunk)."""
    choices = event.get("choices") or []
    return bool(choices) and "role" not in choices[0].get("delta", {})


def fire_metric(request_type: str, name: str, value: float) -> None:
    events.request.fire(
        request_type=request_type,
        name=name,
        response_time=value,
        response_length=0,
        exception=None,
        context={},
    )


class FaceLLMUser(FastHttpUser):
    """One client sending requests back to back (closed loop: users = concurrency)."""

    wait_time = constant(0)
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.headers = {"Content-Type": "application/json"}
        if SETTINGS.api_key:
            self.headers["Authorization"] = f"Bearer {SETTINGS.api_key}"

    @task(SETTINGS.mix.get("chat", 0))
    def chat(self) -> None:
        with self.client.post(
            CHAT_PATH, name="chat", json=chat_body(False), headers=self.headers, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
            elif not resp.json().get("usage", {}).get("completion_tokens"):
                resp.failure("no completion tokens")

    @task(SETTINGS.mix.get("stream", 0))
    def chat_stream(self) -> None:
        start = time.perf_counter()
        with self.client.post(
            CHAT_PATH,
            name="chat stream",
            json=chat_body(True),
            headers=self.headers,
            catch_response=True,
            stream=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            self._read_stream(resp, start)

    def _read_stream(self, resp: ResponseContextManager, start: float) -> None:
        first: float | None = None
        tokens = 0
        for event in sse_events(resp):
            if "error" in event:
                resp.failure(f"in-stream error: {event['error'].get('message', '')[:200]}")
                return
            if first is None and is_token_event(event):
                first = time.perf_counter()
            tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
        end = time.perf_counter()
        resp.request_meta["response_time"] = (end - start) * 1000  # the whole stream
        if first is None or not tokens:
            resp.failure("stream ended without tokens or usage")
            return
        fire_metric(TTFT_TYPE, "chat stream", (first - start) * 1000)
        if tokens > 1 and end > first:
            fire_metric(RATE_TYPE, "chat stream", (tokens - 1) / (end - first))

    @task(SETTINGS.mix.get("faces", 0))
    def faces(self) -> None:
        body = {"image": next(_next_image), "max_faces": 1}
        with self.client.post(
            FACES_PATH, name="faces", json=body, headers=self.headers, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
            elif not resp.json().get("faces"):
                resp.failure("no face in the response")
