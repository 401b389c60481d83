# ruff: noqa
"""Invented numbers on failure paths: random values and literal metrics."""

import random
from random import randint

import numpy as np


def latency_report(monitor):
    try:
        return monitor.measure()
    except Exception:
        return {"latency_ms": 120, "throughput": 950.0, "error_rate": 0}  # expect: SIN004


def random_metrics(monitor):
    try:
        return monitor.measure()
    except Exception:
        return {"cpu": random.uniform(0.2, 0.6), "region": "eu"}  # expect: SIN004


def imported_random(store):
    try:
        return store.count()
    except Exception:
        return randint(100, 200)  # expect: SIN004


def numpy_random(store, n):
    try:
        return store.series(n)
    except Exception:
        return np.random.normal(0, 1, n)  # expect: SIN004


def random_in_comprehension(store, n):
    try:
        return store.series(n)
    except Exception:
        return [random.random() for _ in range(n)]  # expect: SIN004


def metrics_object(store):
    try:
        return store.usage()
    except Exception:
        return UsageReport(
            prompt_tokens=42,  # expect: SIN004
            completion_tokens=17,
            total_cost=0.0021,
        )


def error_object_with_invented_numbers(store):
    try:
        return store.usage()
    except Exception as exc:
        # An honest error object still must not invent what it measured.
        return {"error": str(exc), "rows": 1000}  # expect: SIN004


def after_retries(stores):
    for store in stores:
        try:
            return store.row_count()
        except Exception:
            continue
    return {"row_count": 10000}  # expect: SIN004


def _estimated_usage():
    return {"total_tokens": 512, "cost": 0.01}  # expect: SIN004


def usage(store):
    try:
        return store.usage()
    except Exception:
        return _estimated_usage()
