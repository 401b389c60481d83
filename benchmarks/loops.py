"""How often the embedded SmolLM2 loops on everyday prompts, per repetition setting.

    .venv/bin/python -m benchmarks.loops [--seeds 3] [--max-tokens 256]

Every prompt runs through the real cascade and quality gate (which is not loosened), with
a fixed sampling seed per run, under each setting side by side:

- llama.cpp defaults: no repetition control (what sincere shipped before), streamed;
- llama.cpp defaults + one retry: the same, not streamed, so that a loop rejection gets the
  one more attempt with the loop-retry settings (what the retry alone achieves);
- sincere's settings: the embedded provider's repetition penalties, streamed (a streaming
  client already saw a loop, so it gets no second attempt);
- sincere's settings + one retry: not streamed; a loop rejection gets one more attempt on
  the same deployment with the stronger loop-retry settings.

The report gives, per setting, the rejected share, the median latency of a request, and
how long the answers were (completion tokens; share that ended before the token limit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import Progress

from sincere.answer import Answer
from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.memory.events import InProcessEventBus
from sincere.config import BUILTIN_DEPLOYMENT, load_settings
from sincere.context import ContextFactory
from sincere.errors import ServiceError
from sincere.health import ServiceRegistry
from sincere.llm.breaker import BreakerPolicy
from sincere.llm.cascade import ModelCascade
from sincere.llm.embedded import (
    LLAMA_DEFAULTS,
    LOOP_RETRY_SAMPLING,
    SAMPLING,
    EmbeddedProvider,
    Sampling,
)
from sincere.llm.request import ChatRequest

PROMPTS = (
    "Write a haiku about autumn.",
    "Give me a pancake recipe.",
    "Tell me a short story about a cat.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "Suggest a name for a pet goldfish.",
    "What should I pack for a weekend camping trip?",
    "Write a limerick about a frog.",
    "Explain how a rainbow forms.",
    "Give me three tips for sleeping better.",
    "Write a thank-you note to a friend who helped me move.",
    "What is a good workout for beginners?",
    "Tell me a joke about computers.",
    "How do I make a cup of tea?",
    "Write a bedtime story about a dragon.",
    "What are some fun things to do on a rainy day?",
    "Summarize the plot of Cinderella.",
    "Write a birthday message for my mother.",
    "How can I save money on groceries?",
    "Describe a sunset in a few sentences.",
    "Give me a recipe for tomato soup.",
    "Write a short song about summer.",
    "What are the benefits of drinking water?",
    "Plan a one-day trip to Paris.",
)
# Generous limits: this measures the model's answers, not the machine's speed.
CONFIG = """
[defaults]
max_retries = 0
timeout_s = 900
first_token_timeout_s = 300
stream_idle_timeout_s = 300
"""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    sampling: Sampling
    streaming: bool


@dataclass(slots=True)
class Tally:
    rejected: list[tuple[int, int]] = field(default_factory=list)  # (prompt, seed)
    other_failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    ended_naturally: int = 0
    retried: int = 0


def _cascade(sampling: Sampling, data_dir: Path) -> ModelCascade:
    path = data_dir / "sincere.toml"
    path.write_text(CONFIG)
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(data_dir)})
    provider = EmbeddedProvider(BUILTIN_DEPLOYMENT, sampling=sampling)
    breakers = InProcessBreakers([BUILTIN_DEPLOYMENT.name], BreakerPolicy.of(settings.defaults))
    return ModelCascade(settings, {BUILTIN_DEPLOYMENT.name: provider}, ServiceRegistry(), breakers)


async def _ask(
    cascade: ModelCascade, contexts: ContextFactory, request: ChatRequest, streaming: bool
) -> Answer:
    ctx = contexts.create("bench", "enterprise")
    if not streaming:
        return await cascade.complete(ctx, request)
    async for item in cascade.stream(ctx, request):
        if isinstance(item, Answer):
            return item
    raise AssertionError("a stream ends with an Answer or raises")  # pragma: no cover


async def _run(
    setting: Setting, seeds: list[int], max_tokens: int, progress: Progress, data_dir: Path
) -> Tally:
    cascade = _cascade(setting.sampling, data_dir)
    for route in cascade.routes("smollm2"):
        await route.provider.start()
    contexts = ContextFactory(InProcessEventBus(), 900)
    tally = Tally()
    task = progress.add_task(setting.name, total=len(seeds) * len(PROMPTS))
    for seed in seeds:
        for index, prompt in enumerate(PROMPTS):
            request = ChatRequest.of("smollm2", prompt, max_tokens=max_tokens, extra={"seed": seed})
            started = time.perf_counter()
            try:
                answer = await _ask(cascade, contexts, request, setting.streaming)
            except ServiceError as exc:
                outcomes = {a.outcome for a in exc.attempts}
                if outcomes == {"quality_rejected"}:
                    tally.rejected.append((index, seed))
                else:
                    tally.other_failures.append(f"{prompt!r} seed {seed}: {exc.message}")
            else:
                p = answer.provenance
                tally.retried += len(p.attempts) > 1
                if p.usage is not None:
                    tally.completion_tokens.append(p.usage.completion_tokens)
                tally.ended_naturally += p.finish_reason == "stop"
            tally.latencies_s.append(time.perf_counter() - started)
            progress.advance(task)
    await cascade.aclose()
    return tally


def _row(setting: Setting, tally: Tally, total: int) -> str:
    answered = len(tally.completion_tokens)
    tokens = sorted(tally.completion_tokens)
    length = (
        f"{statistics.median(tokens):.0f} / {tokens[int(0.9 * (len(tokens) - 1))]} / {tokens[-1]}"
        if tokens
        else "n/a"
    )
    sampling = ", ".join(f"{k} {v:g}" for k, v in asdict(setting.sampling).items())
    rejected = len(tally.rejected)
    return (
        f"| {setting.name} | {sampling} | {rejected} / {total} ({rejected / total:.0%}) "
        f"| {len(tally.other_failures)} | {tally.retried} "
        f"| {statistics.median(tally.latencies_s):.2f} | {length} "
        f"| {tally.ended_naturally} / {answered} |"
    )


SETTINGS = {
    "defaults": Setting("llama.cpp defaults, streamed", LLAMA_DEFAULTS, streaming=True),
    "defaults-retry": Setting(
        "llama.cpp defaults + one retry, not streamed", LLAMA_DEFAULTS, streaming=False
    ),
    "sincere": Setting("sincere's settings, streamed", SAMPLING, streaming=True),
    "retry": Setting("sincere's settings + one retry, not streamed", SAMPLING, streaming=False),
}


async def main(seeds: list[int], max_tokens: int, names: list[str]) -> None:
    settings = [SETTINGS[name] for name in names]
    total = len(seeds) * len(PROMPTS)
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        for setting in settings:
            tallies.append(await _run(setting, seeds, max_tokens, progress, Path(tmp)))
    retry = ", ".join(f"{k} {v:g}" for k, v in asdict(LOOP_RETRY_SAMPLING).items())
    print(
        f"\nPython {platform.python_version()}, {os.cpu_count()} cores, {len(PROMPTS)} prompts "
        f"× seeds {', '.join(map(str, seeds))} = {total} requests per setting, "
        f"max_tokens {max_tokens}, llama-cpp-python's default temperature (0.2), "
        f"top_k 40, top_p 0.95, min_p 0.05; loop retry: {retry}\n"
    )
    print(
        "| setting | repetition controls | rejected by the gate | other failures "
        "| answered after a retry | median latency s | completion tokens p50 / p90 / max "
        "| ended before the limit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setting, tally in zip(settings, tallies, strict=True):
        print(_row(setting, tally, total))
    print()
    for setting, tally in zip(settings, tallies, strict=True):
        looped = sorted({PROMPTS[i] for i, _ in tally.rejected})
        print(f"- {setting.name}: rejected {', '.join(looped) or 'none'}")
        for failure in tally.other_failures:
            print(f"  - other failure: {failure}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loops", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="sampling seeds per prompt: 1..N (default 3)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="max_tokens of every request (default 256)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        choices=list(SETTINGS),
        help="run only this setting (repeatable; default: all, side by side)",
    )
    args = parser.parse_args()
    asyncio.run(main(list(range(1, args.seeds + 1)), args.max_tokens, args.setting or [*SETTINGS]))
