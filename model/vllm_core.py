"""One vLLM engine core shared by several API processes, launched as `vllm serve
--api-server-count` does; each API process's `VLLMEngine` is a client of it (`ClientSlot`).
vLLM is imported lazily, as everywhere in `model/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.vllm_args import ClientSlot, VLLMConfig, engine_config


@dataclass
class SharedCore:
    """vLLM's engine core, started for several API processes (`launch_shared_core`)."""

    manager: Any  # vLLM's CoreEngineProcManager
    listeners: Any  # vLLM's EngineZmqListeners: the core's ends of the clients' sockets

    @property
    def sentinels(self) -> list[int]:
        """To wait on: one becomes ready when an engine core process ends."""
        return [process.sentinel for process in self.manager.processes]

    def shutdown(self, timeout_s: float) -> None:
        self.manager.shutdown(timeout=timeout_s)
        self.listeners.cleanup()
        self.listeners = None  # released now, not at interpreter exit (its __del__ then fails)


def launch_shared_core(
    c: VLLMConfig, clients: int, spawn: Callable[[list[ClientSlot]], list[Any]]
) -> SharedCore:
    """Start one engine core for `clients` API processes, as `vllm serve --api-server-count`
    does: bind the core's ZMQ listeners, launch the core, and have `spawn` start the API
    processes (given a slot each; returns them) while the core loads. Returns once the core is
    up; the processes connect by themselves, and the core's start fails if one exits first."""
    from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
    from vllm.v1.executor import Executor

    vllm_config = engine_config(c, clients, -1)
    listeners = bind_engine_zmq_listeners(vllm_config, clients)
    executor = Executor.get_class(vllm_config)
    with launch_core_engines(vllm_config, executor, True, listeners.addresses) as launch:
        slots = []
        for index, (inputs, outputs) in enumerate(
            zip(listeners.inputs, listeners.outputs, strict=True)
        ):
            addresses: dict[str, Any] = {
                "input_address": inputs.address,
                "output_address": outputs.address,
                "input_listener": inputs.socket,
                "output_listener": outputs.socket,
            }
            if launch.tensor_queue is not None:
                addresses["tensor_queue"] = launch.tensor_queue
            slots.append(ClientSlot(addresses, clients, index))
        launch.watched_frontend_processes = spawn(slots)
        for listener in (*listeners.inputs, *listeners.outputs):
            listener.close()  # the API processes hold them now
    return SharedCore(launch.engine_manager, listeners)
