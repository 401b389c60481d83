"""Checking many files on every core: batches of files to a process pool, results in order."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

from sincere_lint.diagnose import diagnose_bytes
from sincere_lint.visitor import Diagnostic
from sincere_lint.vocabulary import Vocabulary

# Files per task: few enough to keep both cores busy to the end, enough to send each
# batch's vocabulary once (pickle writes an object shared by a batch once).
_BATCH = 8
# Below this many files per worker, starting the pool costs more than it saves.
MIN_FILES_PER_WORKER = 4
# A parsed module is hundreds of thousands of short-lived objects, none in a cycle: the
# default thresholds (700, 10, 10) make the collector scan them over and over. Measured on
# LiteLLM, these save about a tenth of the checker's time.
_GC_THRESHOLDS = (10_000, 50, 50)


class Source(NamedTuple):
    """One file to check: its bytes, the vocabulary in force, its name for parse errors."""

    data: bytes
    vocabulary: Vocabulary
    filename: str


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def diagnose_all(sources: Sequence[Source], jobs: int) -> list[list[Diagnostic]]:
    """The diagnostics of each source, in the order given, computed in ``jobs`` processes."""
    if jobs <= 1 or len(sources) < MIN_FILES_PER_WORKER * jobs:
        with _fewer_collections():
            return [diagnose_bytes(*source) for source in sources]
    # Largest files first, so no worker is left with a big one while the other idles.
    order = sorted(range(len(sources)), key=lambda i: len(sources[i].data), reverse=True)
    batches = [order[start : start + _BATCH] for start in range(0, len(order), _BATCH)]
    results: list[list[Diagnostic]] = [[] for _ in sources]
    with ProcessPoolExecutor(max_workers=jobs, initializer=_start_worker) as pool:
        done = pool.map(_diagnose_batch, ([sources[i] for i in batch] for batch in batches))
        for batch, diagnosed in zip(batches, done, strict=True):
            for i, diagnostics in zip(batch, diagnosed, strict=True):
                results[i] = diagnostics
    return results


def _diagnose_batch(sources: list[Source]) -> list[list[Diagnostic]]:
    return [diagnose_bytes(*source) for source in sources]


def _start_worker() -> None:
    gc.set_threshold(*_GC_THRESHOLDS)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
