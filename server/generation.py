"""Running one engine request on behalf of a caller: deadline, abort on exit, error mapping.

Both services generate through `run_generation`, so every request gets the same deadline and the
same translation of engine failures into the OpenAI error envelope. The deadline is the request's
own (`server/context.py`), shared by all its engine calls, its image loading and its writes: a
request of many engine calls cannot stretch it by taking a fresh timeout for each.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator

from model.engine import (
    Engine,
    EngineAborted,
    EngineDeadError,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    InvalidGenerationRequest,
    UnknownAdapter,
)
from server.context import current_request
from server.errors import InternalError, InvalidRequest, NotFound, Timeout, Unavailable, quoted
from server.watchdog import EngineMonitor, ExitCode

log = logging.getLogger(__name__)

_TOO_LONG = re.compile(r"longer than the maximum model length|maximum context length", re.I)

# Fields vLLM checks against the model's vocabulary (their shape is ours to check, and is): when
# it blames one of them, a token id is past the vocabulary.
_TOKEN_ID_FIELDS = ("logit_bias", "stop_token_ids")


def resolve_model(requested: str | None, engine: Engine) -> str | None:
    """The adapter a request's `model` names: None for the base model (or no name), the
    adapter's name for a loaded adapter; any other name is a 404 listing what is served."""
    if requested in (None, engine.model_name):
        return None
    if any(adapter.name == requested for adapter in engine.adapters):
        return requested
    served = ", ".join(quoted(name) for name in served_models(engine))
    raise NotFound(
        f"The model {quoted(requested)} does not exist; this server serves {served}.",
        param="model",
        code="model_not_found",
    )


def served_models(engine: Engine) -> list[str]:
    """The names a request may give as `model`: the base model, then each adapter."""
    return [engine.model_name, *(adapter.name for adapter in engine.adapters)]


async def run_generation(
    engine: Engine,
    monitor: EngineMonitor,
    request: GenerationRequest,
    timeout_s: float | None = None,
) -> AsyncGenerator[GenerationChunk, None]:
    """Stream the engine's chunks; closing this iterator early aborts the engine request. The
    `monitor` (the watchdog's) sees the engine's progress and can end the wait on a verdict.
    The deadline is the served request's; `timeout_s` from now only outside a request."""
    stream = engine.generate(request)
    scope = current_request()
    deadline = scope.deadline if scope is not None else None
    if deadline is None and timeout_s is not None:
        deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            # Entered per chunk, not around the loop: a timeout is bound to one task, and a
            # streamed response is primed in the handler's task and drained in Starlette's.
            # The monitor times the wait (engine progress) and ends it early on a verdict.
            async with asyncio.timeout_at(deadline) as wait:
                chunk = await monitor.next_chunk(stream, wait)
            if chunk is None:
                return
            yield chunk
    except TimeoutError:
        if monitor.verdict is not None:  # the watchdog ended the wait, not the deadline
            raise _engine_unavailable() from None
        await engine.abort(request.request_id)
        if scope is not None and scope.deadline is not None:
            raise scope.timed_out() from None
        raise Timeout(
            f"The request did not finish within {timeout_s:g} s.", code="request_timeout"
        ) from None
    except InvalidGenerationRequest as e:
        raise _invalid(e) from None
    except UnknownAdapter:  # unloaded between the request's arrival and its turn in the engine
        raise _unloaded(request.adapter) from None
    except EngineDeadError:
        log.error("engine dead while serving %s", request.request_id)
        # At once, not at the watchdog's next look: no more requests for a dead engine.
        monitor.fail(ExitCode.ENGINE_DEAD, f"it died while serving {request.request_id}")
        raise _engine_unavailable() from None
    except EngineAborted:
        # What came before the abort is a fragment, not an answer: never a "stop".
        log.warning("engine aborted %s before it finished", request.request_id)
        raise Unavailable(
            "The engine aborted the request before it finished; retry it.", code="engine_aborted"
        ) from None
    except EngineError:
        log.exception("engine error while serving %s", request.request_id)
        raise InternalError("The engine failed to serve this request.") from None
    finally:
        await stream.aclose()


def _unloaded(adapter: str | None) -> NotFound:
    return NotFound(
        f"The model {quoted(adapter)} was unloaded.", param="model", code="model_not_found"
    )


def _engine_unavailable() -> Unavailable:
    return Unavailable("The engine is not available.", code="engine_unavailable")


def _invalid(error: InvalidGenerationRequest) -> InvalidRequest:
    """Our own words for the engine's refusal: its text may quote internals."""
    log.info("engine refused a request: %s", error)
    if _TOO_LONG.search(str(error)):
        return InvalidRequest(
            "The prompt, with its images, does not fit the model's context window.",
            param="messages",
            code="context_length_exceeded",
        )
    if error.param in _TOKEN_ID_FIELDS:
        return InvalidRequest(
            f"{error.param} names a token id outside the model's vocabulary.",
            param=error.param,
            code="invalid_value",
        )
    return InvalidRequest(
        "The engine rejected the request (e.g. a JSON schema or regex it cannot compile).",
        code="invalid_request",
    )
