"""`facellm-server`: settings from env and CLI → uvicorn serving `create_app(settings)`.

SIGTERM starts a drain instead of an exit: /ready and new requests answer 503 while requests in
flight finish (at most `drain_timeout_s`); then uvicorn stops and the lifespan stops the engine.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic_settings import CliApp

from server.app import create_app
from server.config import Settings
from server.limits import Admission
from server.logs import configure_logging
from server.memory import tune_malloc
from server.state import AppState


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self.drain_deadline: float | None = None

    def _admission(self) -> Admission | None:
        state: AppState | None = getattr(self.app.state, "facellm", None)
        return state.admission if state is not None else None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        admission = self._admission()
        if sig != signal.SIGTERM or self.drain_deadline is not None or admission is None:
            super().handle_exit(sig, frame)
            return
        self.drain_deadline = time.monotonic() + self.drain_timeout_s
        admission.draining = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (engine client, tokenizer, processors, modules) lives as long as
        # the process: move it out of the collector's sight, so that full collections while
        # serving scan only what requests allocate (vLLM does the same in EngineCore).
        gc.collect()
        gc.freeze()

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None:
            admission = self._admission()
            idle = admission is None or admission.in_flight == 0
            if idle or time.monotonic() >= self.drain_deadline:
                return True
        return await super().on_tick(counter)


def main() -> None:
    tune_malloc()  # first, before anything large is allocated (see server/memory.py)
    settings = CliApp.run(Settings)
    configure_logging(settings.log_level)
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # vLLM's ZMQ stays on loopback
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config, app, settings.drain_timeout_s).run()


if __name__ == "__main__":
    main()
