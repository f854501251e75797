"""The process-wide decoded-pixel budget: waits in order, gives up at the deadline, never leaks."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from PIL import Image

from server.media import PixelBudget
from server.media.budget import default_pixel_budget, memory_bytes
from tests.conftest import MakeClient, until


@asynccontextmanager
async def reserved(budget: PixelBudget, pixels: int, timeout_s: float) -> AsyncIterator[int]:
    """`pixels` held for the block, as the loader holds them around a decode."""
    amount = await budget.acquire(pixels, timeout_s)
    try:
        yield amount
    finally:
        budget.release(amount)


async def test_reservations_within_the_budget_do_not_wait() -> None:
    budget = PixelBudget(100)
    async with reserved(budget, 60, 1.0), reserved(budget, 40, 1.0):
        assert budget.reserved == 100
    assert budget.reserved == 0


async def test_past_the_budget_requests_wait_their_turn_in_order() -> None:
    budget = PixelBudget(100)
    order: list[str] = []

    async def use(name: str, pixels: int) -> None:
        async with reserved(budget, pixels, 5.0):
            order.append(name)
            await asyncio.sleep(0.01)

    first = await budget.acquire(90, 1.0)
    waiting = [asyncio.create_task(use("big", 80)), asyncio.create_task(use("small", 5))]
    await asyncio.sleep(0.01)
    assert budget.waiting == 2 and order == []  # "small" would fit, but it queued behind "big"
    budget.release(first)
    await asyncio.gather(*waiting)
    assert order == ["big", "small"] and budget.reserved == 0


async def test_an_image_larger_than_the_budget_runs_alone() -> None:
    budget = PixelBudget(100)
    async with reserved(budget, 10_000, 1.0) as held:
        assert held == 100
    assert budget.reserved == 0


async def test_timeout_and_cancellation_leave_nothing_reserved() -> None:
    budget = PixelBudget(100)
    held = await budget.acquire(100, 1.0)
    with pytest.raises(TimeoutError):
        await budget.acquire(50, 0.05)
    task = asyncio.create_task(budget.acquire(50, 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.waiting == 0
    budget.release(held)
    assert budget.reserved == 0
    async with reserved(budget, 100, 0.1):
        pass


def test_default_budget_follows_memory_and_admits_one_largest_image() -> None:
    assert memory_bytes() > 0
    assert default_pixel_budget(floor=25_000_000) >= 25_000_000
    assert default_pixel_budget(floor=1) == memory_bytes() // 16 // 8


def big_png_url(side: int) -> str:
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, 0)).save(buf, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def chat_body(url: str) -> dict[str, object]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


@pytest.mark.parametrize(("timeout_s", "all_succeed"), [(60.0, True), (0.3, False)])
async def test_a_tiny_budget_makes_large_images_wait_then_succeed_or_503(
    make_client: MakeClient, timeout_s: float, all_succeed: bool
) -> None:
    """Eight 3000² PNGs at once, with room to decode one at a time: with time to wait they all
    succeed; with a short deadline some are refused: 503 + Retry-After when their wait for the
    budget ends first, else the request's 504 (one deadline covers image loading). Either way
    the server goes on."""
    url = big_png_url(3000)
    async with make_client(image_pixel_budget=9_000_000, request_timeout_s=timeout_s) as c:
        burst = [c.post("/v1/chat/completions", json=chat_body(url)) for _ in range(8)]
        responses = await asyncio.gather(*burst)
        statuses = sorted(r.status_code for r in responses)
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "image_decode_busy"
            elif r.status_code == 504:
                assert r.json()["error"]["code"] == "request_timeout"
        refused = statuses.count(503) + statuses.count(504)
        assert statuses == [200] * 8 if all_succeed else refused > 0
        assert set(statuses) <= {200, 503, 504}
        budget = c.state.chat.images.budget
        # A decode cut off by the deadline gives its pixels back when its thread stops (at its
        # next chunk of input), which may be just after the response.
        await until(lambda: (budget.reserved, budget.waiting) == (0, 0), timeout_s=2.0)
        after = await c.post("/v1/chat/completions", json=chat_body(big_png_url(64)))
        assert after.status_code == 200
        scrape = (await c.get("/metrics")).text
        assert "facellm_image_pixels_reserved 0.0" in scrape
        assert "facellm_image_decodes_waiting 0.0" in scrape
