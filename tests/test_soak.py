"""The fleet soak of ``benchmarks/soak.py``, shortened for CI: two ``sincere serve``
processes on the machine's Redis and PostgreSQL, streaming clients (half of them walking
away) in front of an upstream that fails at random, and one process killed with
``kill -9`` half-way and started again. Every promise the soak reports is asserted here.
"""

from __future__ import annotations

from benchmarks.soak import parser, run, terminal_counts, violations

# Resident memory a process may gain over the run: a leak of a few kilobytes per request
# (thousands of them) would pass it; one that keeps what requests carry would not.
MEMORY_GROWTH_MB = 100


def test_a_fleet_with_a_process_killed_keeps_every_promise() -> None:
    args = parser().parse_args(["--processes", "2", "--clients", "60", "--seconds", "16"])
    args.kill = True
    result, text = run(args)
    assert violations(result) == [], text
    tally = result["tally"]
    # It really ran: answers and clean errors, requests on both processes, a kill.
    assert tally.outcomes["answer"] > 0, text
    assert tally.outcomes["clean_error"] > 0, text
    assert {process for process, _, _ in tally.spans.values()} == {0, 1}
    assert set(result["window"]) >= {"killed", "back"}
    # Each request that did not die with the process has exactly one terminal event.
    counts = terminal_counts(result)
    assert set(counts.values()) == {1}, text
    survivor = result["memory"][1]  # the process that was not killed
    assert survivor[-1] - survivor[0] < MEMORY_GROWTH_MB, text
