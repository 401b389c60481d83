"""The cascade's stream as OpenAI-compatible server-sent events.

While the request waits in a deployment's queue, each new place is a comment line
(``: sincere queued position=2 …``), as is the end of the wait. A delta carries text,
tool-call fragments as the upstream sent them, or both. A finished
answer ends with a finish-reason chunk (carrying sincere's provenance), an optional usage
chunk, and ``[DONE]``. A stream that fails after text was sent ends with an
in-band ``{"error": ...}`` event and no ``[DONE]``, so no client can take it as complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from sincere.answer import Answer
from sincere.errors import ErrorContext, InternalError, ServiceError
from sincere.llm.provider import Delta
from sincere.tiers.queue import QueueStatus

DONE = b"data: [DONE]\n\n"
log = logging.getLogger("sincere.server")


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(error: ServiceError) -> bytes:
    """The in-band event that ends a stream as failed (never followed by ``[DONE]``)."""
    return _event(error.to_openai_error())


async def openai_sse(
    stream: AsyncIterator[Delta | Answer | QueueStatus],
    *,
    request_id: str,
    requested_model: str,
    include_usage: bool = False,
) -> AsyncGenerator[bytes, None]:
    """Render deltas and the final answer, or the in-band error that cut the stream."""
    created = int(time.time())
    base = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": created}
    first = True
    try:
        async for item in stream:
            if isinstance(item, QueueStatus):  # waiting for a deployment: a comment line
                yield item.comment()
                continue
            if isinstance(item, Delta):
                delta: dict[str, Any] = {}
                if first:
                    delta["role"] = "assistant"
                if not item.tool_calls:
                    delta["content"] = item.text
                else:
                    if item.text or first:  # OpenAI opens a call-only answer with content null
                        delta["content"] = item.text or None
                    delta["tool_calls"] = [f.to_dict() for f in item.tool_calls]
                first = False
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                if item.logprobs is not None:
                    choice["logprobs"] = item.logprobs
                yield _event({**base, "model": item.model or requested_model, "choices": [choice]})
                continue
            p = item.provenance
            final = {"index": 0, "delta": {}, "finish_reason": p.finish_reason}
            yield _event({**base, "model": p.model, "choices": [final], "sincere": p.to_dict()})
            if include_usage and p.usage is not None:
                usage = {
                    "prompt_tokens": p.usage.prompt_tokens,
                    "completion_tokens": p.usage.completion_tokens,
                    "total_tokens": p.usage.total_tokens,
                }
                yield _event({**base, "model": p.model, "choices": [], "usage": usage})
            yield DONE
    except ServiceError as exc:
        yield error_event(exc)
    except Exception:  # a defect still ends the stream as failed, in band
        log.exception("unhandled error in the stream of %s", request_id)
        defect = InternalError.of(ErrorContext(request_id=request_id))
        yield _event(defect.to_openai_error())
