"""The soak, short, as CI runs it: two gateway processes on the machine's Redis and
PostgreSQL, clients spread over both, a fault server failing at random, one process
killed with ``kill -9`` half-way and started again (benchmarks/soak.py, whose long run
is reported in docs/benchmarks.md)."""

from __future__ import annotations

from benchmarks import soak


def test_two_processes_one_killed_keep_every_promise() -> None:
    args = soak.parser().parse_args(
        ["--processes", "2", "--clients", "24", "--seconds", "12", "--kill"]
    )
    result, text = soak.run(args)
    assert soak.violations(result) == [], text
    assert result["window"]["back"] > result["window"]["killed"]  # it was killed, and came back
    tally = result["tally"]
    served = {process for process, _, _ in tally.spans.values()}
    assert served == {0, 1}
    assert tally.outcomes["answer"] > 0
    # Requests on the killed process were cut, never finished as if complete.
    assert not any("[DONE] without provenance" in o for o in tally.others)
