"""Waiting for the busy embedded model: bounded, never a model timeout, honest Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from sincere.answer import Completion
from sincere.config import BUILTIN_DEPLOYMENT
from sincere.errors import ErrorContext, ModelBusy, RetryAfterSource, UpstreamError
from sincere.llm.embedded import EmbeddedProvider
from sincere.llm.failure import final_error
from sincere.llm.provider import collect
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.llm.worker import LocalWorker

LONG = ChatRequest.of(
    "smollm2", "Write a long story about a dragon.", temperature=0.0, max_tokens=400
)
SHORT = ChatRequest.of("smollm2", "Name a fruit.", temperature=0.0, max_tokens=8)
ROOMY = AttemptLimits(total_s=300, connect_s=3, first_token_s=60, stream_idle_s=60)


async def _started(worker: LocalWorker, task: asyncio.Task[Completion]) -> None:
    """Until the worker took up the job of ``task`` (the only one in its line)."""
    for _ in range(6000):
        if worker.busy():
            return
        assert not task.done(), "the long generation ended before it was seen running"
        await asyncio.sleep(0.005)
    raise AssertionError("the long generation never started")


def test_the_worker_counts_the_jobs_ahead_and_estimates_only_from_measured_times() -> None:
    worker = LocalWorker(history=3)
    first, second, third = worker.join(), worker.join(), worker.join()
    estimate = worker.estimate(third)
    assert (estimate.jobs_ahead, estimate.seconds, estimate.measured) == (2, None, 0)

    assert worker.withdraw(second)  # left the line before it started
    assert not worker.begin(second)
    assert worker.estimate(third).jobs_ahead == 1

    assert worker.begin(first)
    assert not worker.withdraw(first)  # running: it cannot leave the line any more
    worker.end(first)
    [measured] = worker.measured()
    estimate = worker.estimate(third)
    assert (estimate.jobs_ahead, estimate.seconds, estimate.measured) == (0, 0.0, 1)

    later = worker.join()
    estimate = worker.estimate(later)
    assert estimate.jobs_ahead == 1
    assert estimate.seconds == pytest.approx(measured)


async def test_a_queued_request_is_not_timed_out_by_the_first_token_limit(
    embedded: EmbeddedProvider,
) -> None:
    """The first-token clock starts when the request's generation does, not in the line."""
    alone = await collect(embedded.stream(LONG, ROOMY))  # how long the long one takes here
    assert alone.finish_reason == "length"
    # A limit the long generation surely outlasts (its speed varies with the machine's
    # load), yet ample for the short one's own first token once it runs.
    limits = AttemptLimits(
        total_s=300, connect_s=3, first_token_s=min(2.0, alone.latency_s / 4), stream_idle_s=60
    )
    long = asyncio.create_task(collect(embedded.stream(LONG, ROOMY)))
    await asyncio.sleep(0)  # the long request joins the line first
    short = await collect(embedded.stream(SHORT, limits))
    await long
    assert short.text.strip()
    # It waited for the whole long generation, longer than its first-token limit, and was
    # still answered: waiting in line is not a silent model.
    assert short.time_to_first_token_s is not None
    assert short.time_to_first_token_s > limits.first_token_s


async def test_a_busy_model_says_so_without_a_retry_time_until_a_generation_was_measured() -> None:
    worker = LocalWorker()
    # Its own model instance (another context size) on its own worker: nothing measured yet.
    deployment = BUILTIN_DEPLOYMENT.model_copy(update={"context_window": 1024})
    provider = EmbeddedProvider(deployment, worker=worker)
    await provider.start()
    impatient = AttemptLimits(
        total_s=300, connect_s=3, first_token_s=60, stream_idle_s=60, queue_s=0.2
    )

    long = asyncio.create_task(collect(provider.stream(LONG, ROOMY)))
    await _started(worker, long)
    with pytest.raises(ModelBusy) as unmeasured:
        await collect(provider.stream(SHORT, impatient))
    assert unmeasured.value.retry_after is None
    assert unmeasured.value.status == 503
    assert "1 generation ahead after waiting 0.2 s" in unmeasured.value.message
    assert "no retry time" in unmeasured.value.message
    await long
    [measured] = worker.measured()

    long = asyncio.create_task(collect(provider.stream(LONG, ROOMY)))
    await _started(worker, long)
    with pytest.raises(ModelBusy) as known:
        await collect(provider.stream(SHORT, impatient))
    # Refused at once: the measured work ahead is longer than the request may wait.
    assert known.value.retry_after == pytest.approx(measured)
    assert "1 generation ahead, longer than the 0.2 s this request may wait" in (
        known.value.message
    )
    assert "from the mean of the last 1 generation here" in known.value.message
    await long
    # Only the two long generations ran: the busy requests never reached the model.
    assert len(worker.measured()) == 2


def test_a_request_only_the_busy_model_could_serve_gets_sincere_s_own_busy_error() -> None:
    busy = ModelBusy("embedded: the local model is busy: …", retry_after=12.3)
    error = final_error("smollm2", [busy], [], ErrorContext(request_id="req_1"), None)
    assert isinstance(error, ModelBusy)
    assert (error.status, error.error_type) == (503, "model_busy")
    assert (error.message, error.retry_after) == (busy.message, 12.3)
    assert error.context.request_id == "req_1"


def test_a_busy_wait_among_other_failures_is_not_attributed_to_a_provider() -> None:
    errors = [UpstreamError("up: 502", status_code=502), ModelBusy("busy", retry_after=12.3)]
    error = final_error("gpt", errors, [], ErrorContext(), None)
    assert error.retry_after == 12.3
    assert error.retry_after_source is RetryAfterSource.MEASURED_SERVICE_TIMES
    assert error.suggestions[0] == (
        "Retry after 12 s, sincere's estimate from the measured generation times of the busy "
        "local model."
    )
