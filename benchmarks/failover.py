"""Failover latency: sincere's cascade beside LiteLLM's Router, configured alike, in one run.

    .venv/bin/python -m benchmarks.failover [--runs 30]

Both talk to the same local OpenAI-compatible servers (the fault server from tests/). The
primary deployment refuses connections or stalls mid-stream; the fallback answers. Every
figure is measured here; the report gives percentiles and sincere/LiteLLM ratios.
LiteLLM is measured when it is installed (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.progress import Progress
from tests.faults import Fault, FaultServer, refused_port

from sincere.backends.memory.events import InProcessEventBus
from sincere.config import load_settings
from sincere.context import ContextFactory
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade

TEXT = "one two three four five six seven eight"
STALL_AFTER = 3  # chunks before the primary goes silent
IDLE_S = 1.0  # stream idle limit, the same for both gateways
Sample = Callable[[], Awaitable[float]]


def _sincere(
    primary: str, fallback: str, max_retries: int, breaker_failures: int = 5
) -> ModelCascade:
    text = f"""
[defaults]
max_retries = {max_retries}
stream_idle_timeout_s = {IDLE_S}
first_token_timeout_s = 5
breaker_consecutive_failures = {breaker_failures}

[[models]]
name = "gpt"
deployments = ["primary"]
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["fallback"]

[[deployments]]
name = "primary"
provider = "openai"
base_url = "{primary}"
model = "m"

[[deployments]]
name = "fallback"
provider = "openai"
base_url = "{fallback}"
model = "m"
supports_prefill = true
"""
    path = Path(tempfile.mkdtemp()) / "sincere.toml"
    path.write_text(text)
    return build_cascade(load_settings(path, env={}), env={})


def _litellm(primary: str, fallback: str, max_retries: int) -> Any:
    from litellm import Router

    def deployment(name: str, base: str) -> dict[str, Any]:
        params = {"model": "openai/m", "api_base": base, "api_key": "k", "stream_timeout": IDLE_S}
        return {"model_name": name, "litellm_params": params}

    return Router(
        model_list=[deployment("gpt", primary), deployment("backup", fallback)],
        fallbacks=[{"gpt": ["backup"]}],
        num_retries=max_retries,
        allowed_fails=0,
        cooldown_time=30,
    )


class Bench:
    def __init__(self, fallback: FaultServer, stalling: FaultServer, runs: int) -> None:
        self.refused = f"http://127.0.0.1:{refused_port()}/v1"
        self.fallback = fallback.base_url
        self.stalling = stalling.base_url
        self.runs = runs
        self.contexts = ContextFactory(InProcessEventBus(), 60)

    async def sincere_direct(self) -> float:
        cascade = _sincere(self.refused, self.fallback, 0)
        return await self._sincere_once(cascade, "backup")

    async def sincere_first(self, retries: int) -> float:
        return await self._sincere_once(_sincere(self.refused, self.fallback, retries), "gpt")

    async def sincere_open(self, cascade: ModelCascade) -> float:
        return await self._sincere_once(cascade, "gpt")

    async def _sincere_once(self, cascade: ModelCascade, model: str) -> float:
        ctx = self.contexts.create("bench")
        started = time.perf_counter()
        answer = await cascade.complete(ctx, ChatRequest.of(model, "Hi"))
        elapsed = time.perf_counter() - started
        assert answer.text == TEXT
        return elapsed

    async def sincere_stall(self) -> float:
        """Seconds from the last byte before the stall to the first byte from the fallback."""
        cascade = _sincere(self.stalling, self.fallback, 0)
        ctx = self.contexts.create("bench")
        last = first_after = 0.0
        pieces = 0
        async for item in cascade.stream(ctx, ChatRequest.of("gpt", "Hi")):
            if isinstance(item, Delta):
                pieces += 1
                if pieces == STALL_AFTER:
                    last = time.perf_counter()
                elif pieces == STALL_AFTER + 1:
                    first_after = time.perf_counter()
        return first_after - last

    async def litellm_direct(self) -> float:
        return await self._litellm_once(_litellm(self.refused, self.fallback, 0), "backup")

    async def litellm_first(self, retries: int) -> float:
        return await self._litellm_once(_litellm(self.refused, self.fallback, retries), "gpt")

    async def _litellm_once(self, router: Any, model: str) -> float:
        started = time.perf_counter()
        response = await router.acompletion(
            model=model, messages=[{"role": "user", "content": "Hi"}]
        )
        elapsed = time.perf_counter() - started
        assert response.choices[0].message.content
        return elapsed

    async def litellm_stall(self) -> float:
        router = _litellm(self.stalling, self.fallback, 0)
        stream = await router.acompletion(
            model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        last = first_after = 0.0
        pieces = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                if pieces == STALL_AFTER:
                    last = time.perf_counter()
                elif pieces == STALL_AFTER + 1:
                    first_after = time.perf_counter()
        if not first_after:
            raise RuntimeError("the stream ended without a byte from the fallback")
        return first_after - last


async def _measure(progress: Progress, label: str, runs: int, sample: Sample) -> list[float]:
    task = progress.add_task(label, total=runs)
    values = []
    for _ in range(runs):
        values.append(await sample())
        progress.advance(task)
    return values


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cell(values: list[float] | str, baseline: list[float] | str) -> str:
    if isinstance(values, str):
        return f"{values} | "
    ms = [v * 1000 for v in values]
    text = f"{_p(ms, 0.5):.1f} / {_p(ms, 0.9):.1f} / {max(ms):.1f} | "
    if isinstance(baseline, list) and values is not baseline:
        text += f"{statistics.median(values) * 1000 - statistics.median(baseline) * 1000:+.1f}"
    return text


def _row(
    name: str,
    ours: list[float] | str,
    theirs: list[float] | str,
    baselines: tuple[list[float], list[float] | str],
) -> str:
    ratio = "n/a"
    if isinstance(ours, list) and isinstance(theirs, list):
        ratio = f"{statistics.median(ours) / statistics.median(theirs):.3f}"
    return f"| {name} | {_cell(ours, baselines[0])} | {_cell(theirs, baselines[1])} | {ratio} |"


async def main(runs: int) -> None:
    has_litellm = importlib.util.find_spec("litellm") is not None
    if has_litellm:
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
        os.environ.setdefault("LITELLM_LOG", "CRITICAL")
    with FaultServer(Fault.ok(text=TEXT)) as fallback, FaultServer() as stalling:
        # The stalling primary answers with TEXT's first words, then goes silent; the
        # fallback continues the prefilled answer with the rest of TEXT.
        stalling.default = Fault(kind="stall", after_chunks=STALL_AFTER, text=TEXT, seconds=30)
        bench = Bench(fallback, stalling, runs)
        open_cascade = _sincere(bench.refused, bench.fallback, 0, breaker_failures=1)
        await bench.sincere_open(open_cascade)  # opens the primary's breaker
        await bench.sincere_direct()  # warm-up: imports, first connections
        if has_litellm:
            await bench.litellm_direct()
        results: dict[str, tuple[list[float] | str, list[float] | str]] = {}
        missing = "not installed"
        with Progress() as progress:
            ours_direct = await _measure(progress, "sincere direct", runs, bench.sincere_direct)
            theirs_direct: list[float] | str = missing
            if has_litellm:
                theirs_direct = await _measure(
                    progress, "litellm direct", runs, bench.litellm_direct
                )
            scenarios: list[tuple[str, Sample, Sample | None]] = [
                (
                    "refused, first request, no retries",
                    lambda: bench.sincere_first(0),
                    lambda: bench.litellm_first(0),
                ),
                (
                    "refused, first request, 2 retries",
                    lambda: bench.sincere_first(2),
                    lambda: bench.litellm_first(2),
                ),
                (
                    "refused, breaker open / cooled down",
                    lambda: bench.sincere_open(open_cascade),
                    None,
                ),
            ]
            for name, ours_sample, theirs_sample in scenarios:
                ours = await _measure(progress, f"sincere {name}", runs, ours_sample)
                theirs: list[float] | str = missing
                if has_litellm and theirs_sample is not None and isinstance(theirs_direct, list):
                    theirs = await _measure(progress, f"litellm {name}", runs, theirs_sample)
                results[name] = (ours, theirs)
            if has_litellm and isinstance(theirs_direct, list):
                router = _litellm(bench.refused, bench.fallback, 0)
                await bench._litellm_once(router, "gpt")  # cools the primary down
                results["refused, breaker open / cooled down"] = (
                    results["refused, breaker open / cooled down"][0],
                    await _measure(
                        progress,
                        "litellm cooled down",
                        runs,
                        lambda: bench._litellm_once(router, "gpt"),
                    ),
                )
            stall_runs = max(3, runs // 5)
            ours_stall = await _measure(progress, "sincere stall", stall_runs, bench.sincere_stall)
            theirs_stall: list[float] | str = missing
            if has_litellm:
                try:
                    theirs_stall = await _measure(
                        progress, "litellm stall", stall_runs, bench.litellm_stall
                    )
                except Exception as exc:  # noqa: BLE001 - reported in the table as what happened
                    theirs_stall = f"no fallback byte ({type(exc).__name__})"
            results[f"stream stall → first fallback byte (idle limit {IDLE_S:g} s)"] = (
                ours_stall,
                theirs_stall,
            )
    version = "not installed"
    if has_litellm:
        version = importlib.metadata.version("litellm")
    print(
        f"\nPython {platform.python_version()}, {os.cpu_count()} cores, runs={runs}, "
        f"LiteLLM {version}\n"
    )
    print(
        "| scenario | sincere ms p50 / p90 / max | sincere added p50 "
        "| LiteLLM ms p50 / p90 / max | LiteLLM added p50 | sincere / LiteLLM (medians) |"
    )
    print("|---|---|---|---|---|---|")
    baselines = (ours_direct, theirs_direct)
    print(_row("direct to the healthy fallback (baseline)", ours_direct, theirs_direct, baselines))
    for name, (ours_values, theirs_values) in results.items():
        if name.startswith("stream stall"):
            baselines = ([0.0], [0.0])  # already a gap, not a request latency
        print(_row(name, ours_values, theirs_values, baselines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="samples per scenario")
    asyncio.run(main(parser.parse_args().runs))
