# ruff: noqa
"""Optional imports, lookups that find nothing, health checks: handlers that are not answers."""

import json

try:
    import orjson
except ImportError:
    orjson = None

try:
    from rich import print as rich_print
except ImportError:

    def rich_print(*args):
        # A stand-in defined in the handler runs later, as ordinary code.
        return "rich is not installed, so plain text is printed instead."


def find_user(users, user_id):
    try:
        return users[user_id]
    except KeyError:
        return None


def parse_port(text):
    try:
        return int(text)
    except ValueError:
        return None


def is_healthy(client):
    try:
        client.ping()
    except Exception:
        return False
    return True


async def health(client):
    try:
        await client.ping()
        return {"healthy": True}
    except Exception as exc:
        return {"healthy": False, "reason": str(exc)}


def list_models(client):
    try:
        return client.models()
    except ConnectionError:
        return []


def load_settings(path):
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        return {}


def encoding_of(headers):
    try:
        return headers["content-encoding"]
    except KeyError:
        return "utf-8"


def error_text(exc):
    try:
        return str(exc)
    except Exception:
        return repr(exc)


def counts_reset(store):
    try:
        return store.counts()
    except Exception:
        return {"requests": 0, "latency_ms": 0, "max_tokens": 4096, "timeout": 30}


class Probe:
    def __init__(self, ok, at, output=None):
        self.ok, self.at, self.output = ok, at, output


def probe_store(store, now, limit):
    try:
        store.select_one(timeout=limit)
    except TimeoutError:
        return Probe(False, now, output=f"no answer to SELECT 1 within {limit} s")
    return Probe(True, now)


def probe_cache(cache):
    try:
        cache.ping()
    except ConnectionError:
        return {"healthy": False, "output": "The cache did not answer the ping."}
    return {"healthy": True}
