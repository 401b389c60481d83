"""The llama.cpp worker: one thread, first in first out, and what it measures of its work.

A llama.cpp context is not thread-safe, so one thread runs every embedded generation in
arrival order. The worker keeps the line of jobs not finished yet and how long recent
generations kept it busy, so a request that would wait too long is told so at once, with
a wait computed from those measurements, or with none before anything was measured.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HISTORY = 20  # generations the mean service time is taken over


@dataclass(eq=False, slots=True)
class Ticket:
    """One job's place in the line; ``cancelled`` stops it before or during generation."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float | None = None  # time.monotonic() when the worker took it up


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """The work ahead of a job, and how long it should take from measured service times."""

    jobs_ahead: int
    seconds: float | None  # None: no generation has been measured on this worker yet
    measured: int  # how many generations the mean is taken over


class LocalWorker:
    """The thread that owns llama.cpp, its line of jobs and its measured service times."""

    def __init__(self, history: int = HISTORY) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sincere-llama")
        self._lock = threading.Lock()
        self._line: list[Ticket] = []  # queued or running, in arrival order
        self._durations: deque[float] = deque(maxlen=history)

    def join(self) -> Ticket:
        """A place at the end of the line; the job submitted next must ``begin`` with it."""
        ticket = Ticket()
        with self._lock:
            self._line.append(ticket)
        return ticket

    def estimate(self, ticket: Ticket) -> WaitEstimate:
        """The jobs ahead of ``ticket`` (the running one included), times the mean service time."""
        with self._lock:
            ahead = self._line.index(ticket) if ticket in self._line else 0
            durations = list(self._durations)
        if not durations:
            return WaitEstimate(ahead, None, 0)
        return WaitEstimate(ahead, ahead * statistics.fmean(durations), len(durations))

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line before the job started; False when the worker already took it up."""
        with self._lock:
            if ticket.started is not None:
                return False
            ticket.cancelled.set()
            if ticket in self._line:
                self._line.remove(ticket)
            return True

    def begin(self, ticket: Ticket) -> bool:
        """Called on the worker thread: start the job, or False when it was withdrawn."""
        with self._lock:
            if ticket.cancelled.is_set():
                if ticket in self._line:
                    self._line.remove(ticket)
                return False
            ticket.started = time.monotonic()
            return True

    def end(self, ticket: Ticket) -> None:
        """Called on the worker thread after a job that began: its service time is recorded."""
        with self._lock:
            if ticket in self._line:
                self._line.remove(ticket)
            if ticket.started is not None:
                self._durations.append(time.monotonic() - ticket.started)

    def busy(self) -> bool:
        """A job is running now."""
        with self._lock:
            return any(t.started is not None for t in self._line)

    def measured(self) -> tuple[float, ...]:
        """The service times the estimate is taken over, oldest first."""
        with self._lock:
            return tuple(self._durations)
