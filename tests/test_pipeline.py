"""The chat pipeline: every way a request can end gives exactly one terminal event, one
record for the observers, and a free tier slot.

The pipeline is driven directly (no HTTP), against real upstreams: two fault servers on
127.0.0.1, the primary deployment 'up' and its fallback 'spare'.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sincere.answer import Answer
from sincere.auth import Authenticator
from sincere.backends.redis import connect
from sincere.backends.redis.events import RedisEventBus
from sincere.config import Settings, load_settings
from sincere.errors import InternalError, RateLimited, ServiceError
from sincere.identity import Caller
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.ports import RequestRecord
from sincere.runtime import Runtime, build_runtime
from sincere.stop import StopReason
from tests.doubles import DEFECT, defective
from tests.faults import Fault, FaultServer
from tests.live import fallback_config
from tests.redis_cut import RedisCut
from tests.test_request_end import until

KINDS = {"defective": defective()}
APOLOGY = "I apologize, but I encountered an error processing your request."
TERMINAL = ("request_completed", "request_failed")


class Records:
    """An observer that keeps what the pipeline hands to observers (as telemetry would)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    async def finished(self, record: RequestRecord) -> None:
        self.records.append(record)


@pytest.fixture
def spare() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def settings(tmp_path: Path, up: str, spare: str | None, *, concurrent: int = 10) -> Settings:
    """Model 'gpt' on 'up' (fallback 'spare'), and model 'broken' on a provider with a bug."""
    extra = f"""
[tiers.free]
concurrent_requests = {concurrent}

[[deployments]]
name = "buggy"
provider = "defective"

[[models]]
name = "broken"
deployments = ["buggy"]
"""
    path = fallback_config(tmp_path, up, spare, extra)
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
async def runtime(
    tmp_path: Path, fault_server: FaultServer, spare: FaultServer
) -> AsyncIterator[tuple[Runtime, Records]]:
    records = Records()
    rt = build_runtime(
        settings(tmp_path, fault_server.base_url, spare.base_url),
        env={},
        provider_kinds=KINDS,
        observers=[records],
    )
    yield rt, records
    await rt.aclose()


ALICE = Caller("alice", "free", "user", None)  # type: ignore[arg-type]


async def lifecycle(rt: Runtime, request_id: str) -> list[tuple[str, str | None]]:
    """The request's own lifecycle events: started, then its terminal ones."""
    replay = await rt.bus.replay("alice")
    return [
        (str(e.type), e.data.get("reason") or e.data.get("error_type"))
        for e in replay.events
        if e.request_id == request_id and e.type in ("request_started", *TERMINAL)
    ]


async def test_an_answer_ends_with_request_completed_and_one_record(
    runtime: tuple[Runtime, Records],
) -> None:
    rt, records = runtime
    answer = await rt.pipeline.complete(
        ALICE, ChatRequest.of("gpt", "Hi"), request_id="r1", surface="test"
    )
    assert answer.provenance.deployment == "up"
    assert await lifecycle(rt, "r1") == [("request_started", None), ("request_completed", None)]
    (record,) = records.records
    assert (record.request_id, record.answer, record.error) == ("r1", answer, None)


async def test_a_failover_ends_once_and_is_recorded_as_one(
    runtime: tuple[Runtime, Records], fault_server: FaultServer
) -> None:
    rt, records = runtime
    fault_server.script(Fault.status(503))
    answer = await rt.pipeline.complete(
        ALICE, ChatRequest.of("gpt", "Hi"), request_id="r2", surface="test"
    )
    assert answer.provenance.deployment == "spare"
    assert await lifecycle(rt, "r2") == [("request_started", None), ("request_completed", None)]
    (record,) = records.records
    assert record.failed_over
    assert [a.deployment for a in record.attempts] == ["up", "spare"]


async def test_a_blocked_answer_fails_over_to_the_fallback(
    runtime: tuple[Runtime, Records], fault_server: FaultServer
) -> None:
    rt, _ = runtime
    fault_server.script(Fault.ok(text=APOLOGY))
    answer = await rt.pipeline.complete(
        ALICE, ChatRequest.of("gpt", "Hi"), request_id="r3", surface="test"
    )
    assert answer.provenance.deployment == "spare"
    assert [a.outcome for a in answer.provenance.attempts] == ["blocked", "ok"]
    assert APOLOGY not in answer.text
    assert await lifecycle(rt, "r3") == [("request_started", None), ("request_completed", None)]


async def test_a_blocked_stream_fails_over_before_any_of_the_phrase_goes_out(
    runtime: tuple[Runtime, Records], fault_server: FaultServer
) -> None:
    rt, _ = runtime
    fault_server.script(Fault.ok(text=APOLOGY))
    stream = rt.pipeline.stream(ALICE, ChatRequest.of("gpt", "Hi"), request_id="r4", surface="test")
    items = [item async for item in stream]
    text = "".join(i.text for i in items if isinstance(i, Delta))
    answer = items[-1]
    assert isinstance(answer, Answer)
    assert "apologize" not in text.lower()
    assert answer.provenance.deployment == "spare"
    assert await lifecycle(rt, "r4") == [("request_started", None), ("request_completed", None)]


async def test_a_blocked_answer_without_a_fallback_is_withheld_and_fails_once(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    rt = build_runtime(
        settings(tmp_path, fault_server.base_url, None), env={}, provider_kinds=KINDS
    )
    try:
        fault_server.script(Fault.ok(text=APOLOGY))
        with pytest.raises(ServiceError) as info:
            await rt.pipeline.complete(
                ALICE, ChatRequest.of("gpt", "Hi"), request_id="r5", surface="test"
            )
        assert "withheld" in info.value.message
        assert "apologize" not in str(info.value.to_problem()).lower()
        assert [a.outcome for a in info.value.attempts] == ["blocked"]
        assert await lifecycle(rt, "r5") == [
            ("request_started", None),
            ("request_failed", info.value.error_type),
        ]
    finally:
        await rt.aclose()


async def test_a_rate_limited_request_fails_once_and_frees_nothing_it_did_not_hold(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    rt = build_runtime(
        settings(tmp_path, fault_server.base_url, None, concurrent=1), env={}, provider_kinds=KINDS
    )
    try:
        fault_server.script(Fault.ok(delay_s=1))
        first = asyncio.create_task(
            rt.pipeline.complete(
                ALICE, ChatRequest.of("gpt", "Hi"), request_id="held", surface="test"
            )
        )
        await until(lambda: len(fault_server.completions) == 1)  # it holds the only slot
        with pytest.raises(RateLimited):
            await rt.pipeline.complete(
                ALICE, ChatRequest.of("gpt", "Hi"), request_id="r6", surface="test"
            )
        assert await lifecycle(rt, "r6") == [
            ("request_started", None),
            ("request_failed", "rate_limited"),
        ]
        await first
        # The slot went back when the first request ended: a third one is admitted.
        await rt.pipeline.complete(
            ALICE, ChatRequest.of("gpt", "Hi"), request_id="r7", surface="test"
        )
    finally:
        await rt.aclose()


async def test_a_defect_fails_once_with_nothing_of_the_defect(
    runtime: tuple[Runtime, Records],
) -> None:
    rt, records = runtime
    with pytest.raises(RuntimeError):
        await rt.pipeline.complete(
            ALICE, ChatRequest.of("broken", "Hi"), request_id="r8", surface="test"
        )
    assert await lifecycle(rt, "r8") == [
        ("request_started", None),
        ("request_failed", "internal_error"),
    ]
    replay = await rt.bus.replay("alice")
    assert all(DEFECT not in e.message for e in replay.events)
    (record,) = records.records
    assert isinstance(record.error, InternalError)


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        (StopReason.CLIENT_GONE, "client_gone"),
        (StopReason.SHUTTING_DOWN, "shutting_down"),
        (None, "cancelled"),  # cancelled without a reason (Ctrl-C, a caller's own task)
    ],
)
async def test_a_stopped_request_fails_once_with_its_reason_and_frees_its_slot(
    tmp_path: Path, fault_server: FaultServer, reason: StopReason | None, said: str
) -> None:
    rt = build_runtime(
        settings(tmp_path, fault_server.base_url, None, concurrent=1), env={}, provider_kinds=KINDS
    )
    try:
        fault_server.script(Fault.hang())
        task = asyncio.create_task(
            rt.pipeline.complete(
                ALICE, ChatRequest.of("gpt", "Hi"), request_id="r9", surface="test"
            )
        )
        await until(lambda: len(fault_server.completions) == 1)
        task.cancel(reason)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await lifecycle(rt, "r9") == [("request_started", None), ("request_failed", said)]
        upstream = fault_server.completions[0].connection
        await until(lambda: upstream in fault_server.client_closed)  # the upstream is let go
        await rt.pipeline.complete(
            ALICE, ChatRequest.of("gpt", "Hi"), request_id="r10", surface="test"
        )
    finally:
        await rt.aclose()


async def test_a_stream_closed_by_its_reader_counts_as_the_client_gone(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    rt = build_runtime(
        settings(tmp_path, fault_server.base_url, None, concurrent=1), env={}, provider_kinds=KINDS
    )
    try:
        fault_server.script(Fault.stall(after_chunks=1))
        stream = rt.pipeline.stream(
            ALICE, ChatRequest.of("gpt", "Hi"), request_id="r11", surface="test"
        )
        first = await anext(stream)
        assert isinstance(first, Delta)
        await stream.aclose()
        assert await lifecycle(rt, "r11") == [
            ("request_started", None),
            ("request_failed", "client_gone"),
        ]
        await rt.pipeline.complete(
            ALICE, ChatRequest.of("gpt", "Hi"), request_id="r12", surface="test"
        )
    finally:
        await rt.aclose()


def test_an_unknown_provider_kind_is_a_configuration_error(tmp_path: Path) -> None:
    from sincere.errors import ConfigError

    with pytest.raises(ConfigError, match="provider 'defective' is not a kind sincere knows"):
        build_runtime(settings(tmp_path, "http://127.0.0.1:9/v1", None), env={})


def test_the_operator_is_a_caller_of_the_standard_tier() -> None:
    assert Authenticator.operator("ann").tier == "standard"


async def test_a_request_stopped_while_its_start_is_published_still_ends_once(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    # A bus that waits on the network (Redis) can be interrupted while it publishes
    # request_started, by a client that left at once: the request must still end, once.
    cut = await RedisCut().start()
    prefix = f"test-pipeline-{os.urandom(6).hex()}:"
    cluster = f'\n[cluster]\nredis_url = "{cut.url}"\nkey_prefix = "{prefix}"\n'
    rt = build_runtime(
        load_settings(
            fallback_config(tmp_path, fault_server.base_url, None, cluster),
            env={"SINCERE_DATA_DIR": str(tmp_path / "data")},
        ),
        env={},
    )
    reader = connect("redis://127.0.0.1:6379/0")
    bus = RedisEventBus(reader, prefix=prefix)
    try:
        cut.silence()  # Redis stops answering: the start event waits for it
        task = asyncio.create_task(
            rt.pipeline.complete(
                ALICE, ChatRequest.of("gpt", "Hi"), request_id="r-cut", surface="test"
            )
        )
        await asyncio.sleep(0.1)
        task.cancel(StopReason.CLIENT_GONE)
        with pytest.raises(asyncio.CancelledError):
            await task
        cut.restore()  # what was kept for Redis is written now

        async def ends() -> list[str]:
            return [
                str(e.type)
                for e in (await bus.replay("alice")).events
                if e.request_id == "r-cut" and e.type in TERMINAL
            ]

        deadline = asyncio.get_running_loop().time() + 20
        while not await ends():
            assert asyncio.get_running_loop().time() < deadline, "the request never ended"
            await asyncio.sleep(0.1)
        assert await ends() == ["request_failed"]
    finally:
        await bus.aclose()
        await rt.aclose()
        await cut.aclose()
        keys = [k async for k in reader.scan_iter(match=f"{prefix}*")]
        if keys:  # the fleet's feed has no expiry: a test's must not stay
            await reader.delete(*keys)
        await reader.aclose()
