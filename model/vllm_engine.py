"""The vLLM engine, in-process: `AsyncLLM` behind the `Engine` interface.

This is the only module that imports vLLM, and it does so inside methods, so the rest of the
project (and its fast tests) import cleanly without vLLM installed. EngineCore and its workers run
as vLLM's own subprocesses; continuous batching and tensor parallelism are vLLM's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from PIL import Image

from model.adapters import AdapterTable
from model.control_tokens import neutralize_control_tokens
from model.engine import (
    Adapter,
    AdapterError,
    ChatMessage,
    Engine,
    EngineAborted,
    EngineDeadError,
    EngineError,
    EngineStats,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    InvalidGenerationRequest,
    SamplingOptions,
    TokenLogprob,
    UnknownAdapter,
)
from model.tiles import TilePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLLMConfig:
    """What the server decides about the engine; everything else stays vLLM's default unless
    `engine_args` (checked by `check_engine_args`) sets it."""

    model_path: Path
    served_model_name: str
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.9
    dtype: str = "bfloat16"
    enforce_eager: bool = False
    max_images_per_prompt: int = 4
    structured_outputs_backend: str = "xgrammar"
    disable_any_whitespace: bool = True
    stream_interval: int = 1
    # LoRA: on when adapters are configured or may be loaded at runtime (it sizes buffers).
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    adapters: tuple[Adapter, ...] = ()  # loaded at start
    # More AsyncEngineArgs fields, read-only; left out of the hash, since values may be dicts.
    engine_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # One of several API processes on a shared engine core (`launch_shared_core`); None: this
    # process starts an engine core of its own.
    client: ClientSlot | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen all the way down: a read-only copy, whatever mapping it was given.
        object.__setattr__(self, "engine_args", MappingProxyType(dict(self.engine_args)))


@dataclass(frozen=True)
class ClientSlot:
    """An API process's place on a shared engine core: vLLM's client addresses (ZMQ sockets and
    queues that a spawned process inherits), how many clients share the core, and which this is.
    """

    addresses: dict[str, Any]
    count: int
    index: int


class EngineArgsError(ValueError):
    """An engine argument vLLM does not have, or one the server sets itself."""


# The engine arguments `build_engine_args` sets from the server's settings, and those settings:
# `engine_args` may not set them a second time.
_FROM_SETTINGS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "served_model_name": ("served_model_name",),
    "tensor_parallel_size": ("tensor_parallel_size",),
    "max_model_len": ("max_model_len",),
    "max_num_seqs": ("max_num_seqs",),
    "gpu_memory_utilization": ("gpu_memory_utilization",),
    "dtype": ("dtype",),
    "enforce_eager": ("enforce_eager",),
    "limit_mm_per_prompt": ("max_images_per_prompt",),
    "structured_outputs_config": ("structured_outputs_backend", "disable_any_whitespace"),
    "stream_interval": ("stream_interval",),
    "enable_lora": ("lora_adapters", "allow_runtime_lora"),
    "max_loras": ("max_loras",),
    "max_lora_rank": ("max_lora_rank",),
}
# Ones the server keeps to itself, and why.
_SERVER_OWN: dict[str, str] = {
    "enable_log_requests": "the server logs every request itself",
    "disable_log_stats": "/metrics and the backlog gauge read vLLM's stats",
}
MANAGED_ENGINE_ARGS = frozenset(_FROM_SETTINGS) | frozenset(_SERVER_OWN)
# Ones that run code the weights or the config name, or carry a secret (which the chart would put
# in a ConfigMap): refused unless the operator opts in (`allow_unsafe_engine_args`).
UNSAFE_ENGINE_ARGS: dict[str, str] = {
    "trust_remote_code": "runs Python code shipped with the weights",
    "code_revision": "picks the remote code trust_remote_code would run",
    "hf_token": "a secret: give it as the HF_TOKEN environment variable from a Secret",
    "worker_cls": "a class path: imports and runs code named in the config",
    "worker_extension_cls": "a class path: imports and runs code named in the config",
    "scheduler_cls": "a class path: imports and runs code named in the config",
    "logits_processors": "class paths: import and run code named in the config",
    "distributed_executor_backend": "may name a class path to import",
    "model_class_overrides": "class paths: import and run code named in the config",
    "io_processor_plugin": "a plugin module to import",
    "reasoning_parser_plugin": "a plugin module to import",
    "allowed_local_media_path": "lets prompts read local files",
}


def check_engine_args(
    engine_args: Mapping[str, Any], allow_unsafe: bool = False
) -> Mapping[str, Any]:
    """`engine_args` keyed as AsyncEngineArgs names its fields (kebab-case read as snake_case),
    read-only. An EngineArgsError names the first that vLLM does not know (with the nearest it
    does), that the server sets itself (with the setting to use), or that is unsafe (unless
    `allow_unsafe`)."""
    if not engine_args:
        return MappingProxyType({})  # nothing to check: spare the import
    known = _engine_arg_names()
    checked: dict[str, Any] = {}
    for name, value in engine_args.items():
        key = name.replace("-", "_")
        if key in MANAGED_ENGINE_ARGS:
            raise EngineArgsError(f"{name!r} is set by the server: {_instead(key)}")
        if key in UNSAFE_ENGINE_ARGS and not allow_unsafe:
            raise EngineArgsError(
                f"{name!r} is refused: it {UNSAFE_ENGINE_ARGS[key]} (set "
                "FACELLM_ALLOW_UNSAFE_ENGINE_ARGS=true to allow it)"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EngineArgsError(f"{name!r} is not a vLLM engine argument{hint}")
        checked[key] = value
    return MappingProxyType(checked)


def _engine_arg_names() -> frozenset[str]:
    # ≈ 7 s on a first import (torch, vLLM's configs), which start() would pay anyway.
    from vllm import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs) if f.name[0] != "_")


def _instead(key: str) -> str:
    if key in _SERVER_OWN:
        return _SERVER_OWN[key]
    flags = [f"FACELLM_{s.upper()} (--{s.replace('_', '-')})" for s in _FROM_SETTINGS[key]]
    return f"use {' or '.join(flags)} instead"


def build_engine_args(c: VLLMConfig) -> Any:
    """The AsyncEngineArgs for `c`: the server's settings, then the checked `engine_args`."""
    from vllm import AsyncEngineArgs
    from vllm.config import StructuredOutputsConfig

    return AsyncEngineArgs(
        model=str(c.model_path),
        served_model_name=[c.served_model_name],
        tensor_parallel_size=c.tensor_parallel_size,
        max_model_len=c.max_model_len,
        max_num_seqs=c.max_num_seqs,
        gpu_memory_utilization=c.gpu_memory_utilization,
        dtype=c.dtype,  # type: ignore[arg-type]  # validated by vLLM
        enforce_eager=c.enforce_eager,
        limit_mm_per_prompt={"image": c.max_images_per_prompt},
        structured_outputs_config=StructuredOutputsConfig(
            backend=c.structured_outputs_backend,  # type: ignore[arg-type]
            disable_any_whitespace=c.disable_any_whitespace,
        ),
        enable_log_requests=False,
        stream_interval=c.stream_interval,
        enable_lora=c.enable_lora,
        max_loras=c.max_loras,
        max_lora_rank=c.max_lora_rank,  # type: ignore[arg-type]  # checked by Settings
        **check_engine_args(c.engine_args),  # again: a VLLMConfig may come from elsewhere
    )


def engine_config(c: VLLMConfig, clients: int, rank: int) -> Any:
    """vLLM's engine config as `clients` API processes see it (`rank` -1: the launcher's)."""
    from vllm.usage.usage_lib import UsageContext

    args = build_engine_args(c)
    args._api_process_count, args._api_process_rank = clients, rank
    return args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)


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


def to_hf_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages → the chat-template shape, with control tokens in text defanged."""
    hf: list[dict[str, Any]] = []
    for message in messages:
        content: list[dict[str, Any]] = [
            {"type": "text", "text": neutralize_control_tokens(part)}
            if isinstance(part, str)
            else {"type": "image"}
            for part in message.parts
        ]
        hf.append({"role": message.role, "content": content})
    return hf


class VLLMEngine(Engine):
    def __init__(self, config: VLLMConfig) -> None:
        self.config = config
        self.model_name = config.served_model_name
        self.tiles = TilePlan.from_model_dir(config.model_path)
        self._llm: Any = None
        self._tokenizer: Any = None
        rank = config.max_lora_rank if config.enable_lora else None
        self._adapters = AdapterTable(config.served_model_name, rank)
        self._changing = asyncio.Lock()  # one adapter change at a time: checks hold till done

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        c = self.config
        if c.client is None:
            self._llm = AsyncLLM.from_engine_args(build_engine_args(c))
        else:  # a client of the core `launch_shared_core` started (its addresses: ours alone)
            self._llm = AsyncLLM.from_vllm_config(
                engine_config(c, c.client.count, c.client.index),
                client_addresses=dict(c.client.addresses),
                client_count=c.client.count,
                client_index=c.client.index,
            )
        self._tokenizer = self._llm.get_tokenizer()
        for adapter in c.adapters:  # before serving: a broken adapter is a startup failure
            await self.load_adapter(adapter)
        await self._warm_up()
        log.info("engine started", extra={"model": c.served_model_name})

    async def _warm_up(self) -> None:
        """One small image request: the first caller should not pay for the image path setup."""
        image = Image.new("RGB", (64, 64), (128, 128, 128))
        request = GenerationRequest(
            request_id="warmup",
            messages=(ChatMessage(role="user", parts=(image, "warm up")),),
            sampling=SamplingOptions(max_tokens=2, temperature=0.0),
        )
        async for _ in self.generate(request):
            pass

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        prompt: str = self._tokenizer.apply_chat_template(
            to_hf_messages(messages), tokenize=False, add_generation_prompt=True
        )
        return prompt

    def _sampling_params(self, options: SamplingOptions) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if (s := options.structured) is not None:
            structured = StructuredOutputsParams(
                json=s.json_schema,
                json_object=True if s.json_object else None,
                choice=list(s.choice) if s.choice else None,
                regex=s.regex,
            )
        return SamplingParams(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            stop=list(options.stop) or None,
            logprobs=options.logprobs,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,
            n=options.n,
            top_k=options.top_k,
            min_p=options.min_p,
            repetition_penalty=options.repetition_penalty,
            min_tokens=options.min_tokens,
            ignore_eos=options.ignore_eos,
            skip_special_tokens=options.skip_special_tokens,
            logit_bias=dict(options.logit_bias) or None,
            stop_token_ids=list(options.stop_token_ids) or None,
            include_stop_str_in_output=options.include_stop_str_in_output,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        images = [p for m in request.messages for p in m.parts if not isinstance(p, str)]
        text = self.render_prompt(request.messages) + request.answer_prefix
        prompt: dict[str, Any] = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        produced: dict[int, int] = {}  # completion tokens so far, per choice index
        try:
            stream = self._llm.generate(
                prompt,
                self._sampling_params(request.sampling),
                request.request_id,
                lora_request=self._lora_request(request.adapter),
            )
            async for out in stream:
                # With n > 1, vLLM runs one child request per choice; a delta holds an output for
                # each choice that moved since the last one we read (at most n), by `index`.
                for delta in out.outputs:
                    yield self._chunk(request, delta, len(out.prompt_token_ids or ()), produced)
        except VLLMEngineDead as e:
            raise EngineDeadError("the vLLM engine died") from e
        except (EngineError, InvalidGenerationRequest, UnknownAdapter):
            raise  # ours (finish_reason, an adapter unloaded meanwhile): already the right kind
        except (VLLMClientError, ValueError) as e:
            raise InvalidGenerationRequest(str(e), param=getattr(e, "parameter", None)) from e
        except Exception as e:
            if self._llm.errored:
                raise EngineDeadError("the vLLM engine died") from e
            raise EngineError("generation failed") from e

    def _chunk(
        self, request: GenerationRequest, delta: Any, prompt_tokens: int, produced: dict[int, int]
    ) -> GenerationChunk:
        """One choice's delta as our chunk, counting its tokens in `produced`."""
        count = produced.get(delta.index, 0) + len(delta.token_ids)
        produced[delta.index] = count
        return GenerationChunk(
            text=delta.text,
            completion_tokens=count,
            prompt_tokens=prompt_tokens,
            finish_reason=finish_reason(
                delta.finish_reason,
                constrained=request.sampling.structured is not None,
                produced=count,
            ),
            logprobs=self._logprobs(delta, request.sampling.logprobs),
            index=delta.index,
        )

    def _logprobs(self, delta: Any, top: int | None) -> tuple[TokenLogprob, ...]:
        if top is None or not delta.logprobs:
            return ()
        result = []
        for token_id, candidates in zip(delta.token_ids, delta.logprobs, strict=False):
            chosen = candidates[token_id]
            ranked = sorted(candidates.values(), key=lambda lp: lp.rank or 0)[:top]
            result.append(
                TokenLogprob(
                    token=self._decode(token_id, chosen.decoded_token),
                    logprob=float(chosen.logprob),
                    top=tuple((lp.decoded_token or "", float(lp.logprob)) for lp in ranked),
                )
            )
        return tuple(result)

    def _decode(self, token_id: int, decoded: str | None) -> str:
        return decoded if decoded is not None else str(self._tokenizer.decode([token_id]))

    @property
    def adapters(self) -> list[Adapter]:
        return self._adapters.adapters

    async def load_adapter(self, adapter: Adapter) -> None:
        """Loaded into the engine now (vLLM reads and checks the files), so a bad adapter fails
        here rather than in the first request that names it."""
        async with self._changing:
            adapter_id = self._adapters.admit(adapter)
            try:
                await self._llm.add_lora(self._as_lora_request(adapter, adapter_id))
            except Exception as e:
                log.warning("vLLM could not load adapter %s: %s", adapter.name, e)
                raise AdapterError(f"the engine could not load adapter {adapter.name!r}") from e
            self._adapters.add(adapter, adapter_id)
        log.info("adapter loaded", extra={"adapter": adapter.name})

    async def unload_adapter(self, name: str) -> None:
        async with self._changing:
            await self._llm.remove_lora(self._adapters.remove(name))
        log.info("adapter unloaded", extra={"adapter": name})

    def _lora_request(self, name: str | None) -> Any:
        if name is None:
            return None
        return self._as_lora_request(*self._adapters.get(name))

    @staticmethod
    def _as_lora_request(adapter: Adapter, adapter_id: int) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter_id, str(adapter.path))

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def check_health(self) -> None:
        if self._llm is None or self._llm.errored:
            raise EngineDeadError("the vLLM engine is not running")
        try:
            await self._llm.check_health()
        except Exception as e:
            raise EngineDeadError("the vLLM engine failed its health check") from e

    def stats(self) -> EngineStats:
        """The scheduler's counts, from vLLM's own gauges. Read through a registry restricted to
        those two, so each call collects two gauges, not every vLLM series (histograms with
        their buckets, per engine): the backlog gauge calls this on every scrape."""
        from prometheus_client import REGISTRY

        totals = dict.fromkeys(_SCHEDULER_GAUGES, 0.0)
        for family in REGISTRY.restricted_registry(_SCHEDULER_GAUGES).collect():
            for sample in family.samples:
                if sample.name in totals and sample.labels.get("model_name") == self.model_name:
                    totals[sample.name] += sample.value
        return EngineStats(
            running=int(totals["vllm:num_requests_running"]),
            waiting=int(totals["vllm:num_requests_waiting"]),
        )

    async def shutdown(self) -> None:
        """Stop vLLM without ever hanging our own exit. Its shutdown blocks (it stops EngineCore,
        killing it after `STOP_TIMEOUT_S`, and joins its executors), so it runs in a daemon thread,
        off the event loop; past the timeout and a grace we stop waiting, and the thread, being a
        daemon, does not hold the process."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def stop() -> None:
            try:
                llm.shutdown(timeout=STOP_TIMEOUT_S)
            except Exception:
                log.exception("vLLM shutdown failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                    loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=stop, name="vllm-shutdown", daemon=True).start()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S + STOP_GRACE_S):
                await asyncio.shield(done)
        except TimeoutError:
            log.error("vLLM did not shut down within %g s; leaving it behind", STOP_TIMEOUT_S)


# How long vLLM's shutdown waits for EngineCore to stop before killing its process tree, and how
# much longer we wait for the rest of its shutdown (sockets, executors).
STOP_TIMEOUT_S = 5.0
STOP_GRACE_S = 3.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_SCHEDULER_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
_COMPLETED: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def finish_reason(reason: str | None, *, constrained: bool, produced: int) -> FinishReason | None:
    """vLLM's finish reason as a caller may see it: only "stop" and "length" end a completion.

    The others are failures and must never reach a client looking like an answer:
    - "abort": the engine dropped the request (we never read our own aborts: closing the stream
      is how we abort). A 503 for the caller.
    - "error": vLLM's request-level failure. Its scheduler finishes a request whose structured-
      output grammar failed to compile in the engine core this way, before any token; that is
      the caller's schema or regex (a 400). Any other "error" is ours (a 500).
    - anything else (e.g. "repetition", a detector we never enable): ours too.
    """
    if reason is None:
        return None
    if (ended := _COMPLETED.get(reason)) is not None:
        return ended
    if reason == "abort":
        raise EngineAborted("the engine aborted the request before it finished")
    if reason == "error" and constrained and produced == 0:
        raise InvalidGenerationRequest("the engine could not compile the structured-output grammar")
    raise EngineError(f"the engine ended the request with finish reason {reason!r}")
