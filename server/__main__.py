"""`facellm-server`: the settings, from the CLI, the environment and the file, then one of two
ways to run: one process serving (`server/serving.py`), or a supervisor over several API
processes on one engine core (`server/supervisor.py`)."""

from __future__ import annotations

import os
import sys

from server.engine_setup import build_engine
from server.logs import configure_logging
from server.memory import tune_malloc
from server.serving import serve_app
from server.startup import load_settings, preflight, startup_errors_reported
from server.supervisor import supervise


def main() -> None:
    tune_malloc()  # first, before anything large is allocated (see server/memory.py)
    settings = load_settings()
    configure_logging(settings.log_level)
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # vLLM's ZMQ stays on loopback
    with startup_errors_reported():
        preflight(settings)
        if settings.api_processes > 1:
            sys.exit(supervise(settings))
    sys.exit(serve_app(settings, lambda: build_engine(settings)))


if __name__ == "__main__":
    main()
