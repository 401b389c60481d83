# ruff: noqa
"""Handlers that let the failure through: re-raise, translate with ``from``, log and raise."""

import logging
import warnings

logger = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The model did not answer."""


def reraise(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        logger.exception("completion failed")
        raise


def translate(client, prompt):
    try:
        return client.complete(prompt)
    except ConnectionError as exc:
        raise ServiceUnavailable("the language model did not answer; try again later") from exc


def translate_hiding_the_cause(client, prompt):
    try:
        return client.complete(prompt)
    except KeyError:
        raise LookupError(f"no model named {prompt!r} is configured") from None


def warn_then_raise(client, prompt):
    try:
        return client.complete(prompt)
    except Exception as exc:
        warnings.warn(f"completion failed: {exc}", RuntimeWarning, stacklevel=2)
        raise


async def stream_then_raise(client, prompt):
    try:
        async for chunk in client.stream(prompt):
            yield chunk
    except Exception as exc:
        raise ServiceUnavailable("the stream broke before the answer was complete") from exc


def raise_with_measured_retry_after(breaker):
    if breaker.is_open:
        raise ServiceUnavailable(
            "model down", retry_after=breaker.seconds_until_probe(), timeout_seconds=30
        )
