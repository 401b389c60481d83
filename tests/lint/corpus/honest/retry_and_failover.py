# ruff: noqa
"""Retrying and failing over to other real calls, then failing honestly."""

import asyncio
import time


class AllProvidersFailed(Exception):
    def __init__(self, attempts):
        super().__init__(f"{len(attempts)} providers failed")
        self.attempts = attempts


async def retry(client, prompt, attempts=3):
    for attempt in range(attempts):
        try:
            return await client.complete(prompt)
        except TimeoutError:
            await asyncio.sleep(2**attempt)
            continue
    raise TimeoutError(f"no answer after {attempts} attempts")


def failover(providers, prompt):
    errors = []
    for provider in providers:
        try:
            return provider.complete(prompt)
        except Exception as exc:
            errors.append(exc)
    raise AllProvidersFailed(errors)


class Cascade:
    async def complete(self, prompt):
        try:
            return await self.primary.complete(prompt)
        except Exception:
            return await self.backup.complete(prompt)

    async def with_fallback_model(self, prompt):
        try:
            return await self.primary.complete(prompt)
        except Exception:
            return await self._call_fallback_model(prompt)

    async def _call_fallback_model(self, prompt):
        return await self.fallback_client.complete(prompt)

    async def degraded_but_real(self, prompt, start):
        try:
            return await self.primary.complete(prompt)
        except Exception:
            reply = await self.small_model.complete(prompt)
            return {
                "response": reply,
                "model_selected": self.small_model.name,
                "latency_ms": (time.monotonic() - start) * 1000,
                "selection_reasoning": f"primary failed; {self.small_model.name} answered",
            }

    def wrapped_real_response(self, prompt):
        try:
            return self.primary.complete(prompt)
        except NotImplementedError:
            response = self.primary.complete_without_streaming(prompt)
            return self._wrap_in_fake_stream(response)

    def _wrap_in_fake_stream(self, response):
        yield response


def swallowed_then_computed(cache, key, compute):
    try:
        return cache[key]
    except KeyError:
        pass
    value = compute(key)
    cache[key] = value
    return value


def lookup_default(mapping, key, fallback=None):
    try:
        return mapping[key]
    except KeyError:
        return fallback
