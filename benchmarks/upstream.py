"""A fast local OpenAI-compatible upstream for benchmarks: it answers and does nothing else.

    .venv/bin/python -m benchmarks.upstream --port 9000 [--delay-ms 100 --jitter-ms 20]

``POST /v1/chat/completions`` gets a fixed short answer with usage: one JSON object, or with
``"stream": true`` the same answer as server-sent events (two content chunks, a finish chunk,
a usage chunk and ``[DONE]``) in a single write. Every response is built once at import.
A raw ASGI app under uvicorn with uvloop and httptools and no access log, so that the
upstream's own cost stays small beside what the gateways in front of it add.

``--delay-ms D --jitter-ms J`` holds each completion for a service time drawn uniformly
from [D - J, D + J] milliseconds before answering (``benchmarks/queue.py``: a deployment
whose requests take a known, varying time); without them it answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

ANSWER = "Four."
MODEL = "bench-upstream"
USAGE = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
_CREATED = 1_767_225_600  # fixed: the answer is the same every time


def _json_body() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": USAGE,
        },
        separators=(",", ":"),
    ).encode()


def _sse_body() -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None, usage: bool = False) -> bytes:
        event: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": MODEL,
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            event["usage"] = USAGE
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    return b"".join(
        [
            chunk({"role": "assistant", "content": ANSWER[:-1]}, None),
            chunk({"content": ANSWER[-1]}, None),
            chunk({}, "stop"),
            chunk({}, None, usage=True),
            b"data: [DONE]\n\n",
        ]
    )


def _start(body: bytes, content_type: bytes, status: int = 200) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ],
    }


_JSON = _json_body()
_SSE = _sse_body()
_NOT_FOUND = b'{"error":{"message":"not found","type":"invalid_request_error","code":null}}'
_RESPONSES = {
    False: (_start(_JSON, b"application/json"), {"type": "http.response.body", "body": _JSON}),
    True: (_start(_SSE, b"text/event-stream"), {"type": "http.response.body", "body": _SSE}),
}
_MISSING = (
    _start(_NOT_FOUND, b"application/json", 404),
    {"type": "http.response.body", "body": _NOT_FOUND},
)


# A completion's service time (seconds): its mean and the spread either side; set by main().
_DELAY_S = (0.0, 0.0)


def _service_s() -> float:
    delay, jitter = _DELAY_S
    return max(0.0, random.uniform(delay - jitter, delay + jitter)) if delay or jitter else 0.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST" and scope["path"].endswith("/chat/completions"):
        streaming = b'"stream"' in body and json.loads(body).get("stream") is True
        start, reply = _RESPONSES[streaming]
        if (service := _service_s()) > 0:
            await asyncio.sleep(service)
    else:
        start, reply = _MISSING
    await send(start)
    await send(reply)


def main() -> None:
    global _DELAY_S
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="mean service time of a completion (0)"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="service times spread uniformly +/- this"
    )
    args = parser.parse_args()
    port = args.port
    _DELAY_S = (args.delay_ms / 1000, args.jitter_ms / 1000)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
