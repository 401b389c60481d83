"""Recovery without making users wait: a primary down for 10 s, then healthy, with a
fallback, on the default breaker schedule and the real prober, in real time.

The one test of the suite with a time bound as its requirement: traffic is back on the
recovered primary within 4 s. The bound is counted from the fault server's own records
(its clock is this process's monotonic clock), never from a race between threads.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.memory.events import InProcessEventBus
from sincere.config import load_settings
from sincere.context import ContextFactory
from sincere.errors import ServiceUnavailable
from sincere.events import EventType
from sincere.llm.breaker import BreakerPolicy, BreakerState
from sincere.llm.cascade import ModelCascade
from sincere.llm.prober import PROBE_TICK_S, probe_open_deployments
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade
from tests.clocks import ManualClock
from tests.conftest import closing
from tests.faults import Fault, FaultServer, RecordedRequest

KEY = "fault-key-0a1b2c3d4e5f"
OUTAGE_S = 10.0
RECOVERY_BOUND_S = 4.0


def _cascade(tmp_path: Path, primary: FaultServer, fallback: FaultServer) -> ModelCascade:
    """Model 'gpt' on 'a', falling back to 'backup' on 'b'; the breakers' defaults."""
    text = '[defaults]\nmax_retries = 0\n\n[[models]]\nname = "gpt"\ndeployments = ["a"]\n'
    text += 'fallbacks = ["backup"]\n\n[[models]]\nname = "backup"\ndeployments = ["b"]\n'
    for name, server in (("a", primary), ("b", fallback)):
        text += (
            f'\n[[deployments]]\nname = "{name}"\nprovider = "openai"\n'
            f'base_url = "{server.base_url}"\nmodel = "{name}-upstream"\n'
            'api_key_env = "FAULT_KEY"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n'
        )
    path = tmp_path / "sincere.toml"
    path.write_text(text)
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})
    return closing(build_cascade(settings, env={"FAULT_KEY": KEY}))


def _is_probe(request: RecordedRequest) -> bool:
    return request.body is not None and request.body.get("max_tokens") == 1


async def test_a_primary_down_for_10_s_is_probed_in_the_shadow_and_serves_within_4_s(
    tmp_path: Path, bus: InProcessEventBus, contexts: ContextFactory
) -> None:
    with FaultServer() as a, FaultServer(Fault.ok(text="from the fallback")) as b:
        began = time.monotonic()
        recovered_at = began + OUTAGE_S
        a.fail_until(recovered_at, Fault.status(503))
        a.default = Fault.ok(text="from the primary")
        cascade = _cascade(tmp_path, a, b)
        prober = asyncio.create_task(probe_open_deployments(cascade))
        served: list[tuple[float, str]] = []  # (issued at, deployment that answered)
        try:
            while time.monotonic() < recovered_at + 2 * RECOVERY_BOUND_S:
                issued = time.monotonic()
                ctx = contexts.create("alice")
                answer = await cascade.complete(ctx, ChatRequest.of("gpt", "Tell me a fact."))
                served.append((issued, answer.provenance.deployment))
                await asyncio.sleep(0.05)
        finally:
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)

    # Every user request was answered; none failed while the primary was down.
    assert {d for _, d in served} == {"a", "b"}
    user_requests = [r for r in a.completions if not _is_probe(r)]
    probes = [r for r in a.completions if _is_probe(r)]
    # While its circuit was open, only probes reached the primary: the users' requests
    # that did are the 5 that opened it (breaker_consecutive_failures), then none until
    # a probe had closed it again.
    during = [r for r in user_requests if r.at < recovered_at]
    assert len(during) == 5
    assert probes
    first_probe = probes[0].at
    assert all(r.at < first_probe for r in during)
    passed = next(p for p in probes if p.at >= recovered_at)
    assert all(r.at > passed.at for r in user_requests[5:])
    assert probes[-1] is passed  # once closed, nothing more to probe

    # The default schedule: one probe every 2 s during the first minute of the outage.
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(probes)]
    assert all(gap >= 2.0 for gap in gaps)
    assert max(gaps) <= 2.0 + PROBE_TICK_S + 1.0  # the tick, and generous slack
    assert len(probes) >= 4  # 10 s of outage: 5 tries at 2 s spacing, give or take one

    # Traffic is back on the primary within 4 s of its recovery.
    first_back = next(issued for issued, d in served if d == "a" and issued >= recovered_at)
    assert first_back - recovered_at <= RECOVERY_BOUND_S
    assert all(d == "a" for issued, d in served if issued > passed.at + 0.5)

    # The transitions were reported like any other: recovered, with the probe as the reason.
    record = cascade.registry.record("a")
    assert record.transitions[-1].state == "ready"
    assert "its probe succeeded" in record.transitions[-1].message
    opened = [
        e
        for e in (await bus.replay("alice")).events
        if e.service == "a" and e.type is EventType.SERVICE_UNAVAILABLE
    ]
    assert "5 calls in a row failed" in opened[0].message  # to the request that opened it


async def test_with_every_circuit_open_a_due_one_takes_the_request_as_its_probe(
    tmp_path: Path, contexts: ContextFactory
) -> None:
    # A shadow probe spares users a wait when another route can answer. When none can
    # (every circuit open), the due circuit takes the user's request as its probe rather
    # than hand out a certain error.
    clock = ManualClock()
    with FaultServer(Fault.status(503)) as a:
        text = "[defaults]\nmax_retries = 0\nbreaker_consecutive_failures = 1\n"
        text += '\n[[models]]\nname = "gpt"\ndeployments = ["a"]\n'
        text += f'\n[[deployments]]\nname = "a"\nprovider = "openai"\nbase_url = "{a.base_url}"\n'
        text += 'model = "a-upstream"\n'
        path = tmp_path / "sincere.toml"
        path.write_text(text)
        settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})
        breakers = InProcessBreakers(
            ["a", "embedded"],
            BreakerPolicy.of(settings.defaults),
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
        cascade = closing(build_cascade(settings, env={}, breakers=breakers))
        with pytest.raises(ServiceUnavailable):  # the failure that opens the circuit
            await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
        assert breakers["a"].state is BreakerState.OPEN
        a.default = Fault.ok(text="back again")
        with pytest.raises(ServiceUnavailable):  # not due yet: refused, upstream untouched
            await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
        assert len(a.completions) == 1
        clock.advance(settings.defaults.breaker_open_s)  # the probe is due; no prober runs
        answer = await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
    assert answer.text == "back again"
    assert [x.outcome for x in answer.provenance.attempts] == ["circuit_open", "ok"]
    assert breakers["a"].state is BreakerState.CLOSED  # the request was the probe
