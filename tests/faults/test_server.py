"""Tests of the fault server itself: what a client (httpx) sees on the wire for each fault."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.faults import Fault, FaultServer, RecordedRequest, refused_port, tool_call_deltas

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "say something nice"},
]
ECHO = "Echo: say something nice"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture
def client(server: FaultServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as http:
        yield http


def payload(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "m-1", "messages": MESSAGES, "stream": stream, **extra}


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an event stream, checking every event ends in a blank line."""
    text = response.text
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event.removeprefix("data: ") for event in events]


def deltas(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def read_stream(client: httpx.Client, fault_kind: str) -> tuple[list[str], BaseException | None]:
    """Stream one completion, collecting SSE lines until the stream ends or fails."""
    lines: list[str] = []
    with client.stream("POST", "/chat/completions", json=payload(stream=True)) as response:
        assert response.status_code == 200, fault_kind
        try:
            lines.extend(line for line in response.iter_lines() if line)
        except httpx.TransportError as exc:
            return lines, exc
    return lines, None


# -- normal answers ----------------------------------------------------------------------------


def test_ok_non_streaming_is_an_openai_chat_completion(
    server: FaultServer, client: httpx.Client
) -> None:
    response = client.post("/chat/completions", json=payload(), headers={"X-Trace": "t1"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "m-1"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": ECHO}, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    [request] = server.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["x-trace"] == "t1"
    assert request.headers["content-type"] == "application/json"
    assert request.body == payload()
    assert request.fault == Fault.ok()
    assert request.at <= time.monotonic()


def test_ok_streaming_sends_one_chunk_per_word_then_finish_then_done(
    client: httpx.Client,
) -> None:
    response = client.post("/chat/completions", json=payload(stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Echo:"},
        {"content": " say"},
        {"content": " something"},
        {"content": " nice"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"m-1"}
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)


def test_streaming_usage_chunk_only_when_include_usage(client: httpx.Client) -> None:
    body = payload(stream=True, stream_options={"include_usage": True})
    events = sse_events(client.post("/chat/completions", json=body))

    usage = json.loads(events[-2])
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_tool_calls_answer_with_calls_both_ways(server: FaultServer, client: httpx.Client) -> None:
    calls = (("get_weather", '{"city": "Paris"}'), ("get_time", "{}"))
    server.default = Fault.tool_calls(*calls)
    body = client.post("/chat/completions", json=payload()).json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ],
    }
    events = sse_events(client.post("/chat/completions", json=payload(stream=True)))
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None, **tool_call_deltas(calls)[0]}
    assert deltas[1:-1] == tool_call_deltas(calls)[1:]
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_logprobs_come_with_the_text_when_asked_for(client: httpx.Client) -> None:
    body = client.post("/chat/completions", json=payload(logprobs=True)).json()
    tokens = [entry["token"] for entry in body["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == ECHO
    events = sse_events(client.post("/chat/completions", json=payload(True, logprobs=True)))
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert [c["logprobs"]["content"][0]["token"] for c in chunks[:-1]] == tokens
    plain = client.post("/chat/completions", json=payload()).json()
    assert "logprobs" not in plain["choices"][0]


def test_raw_stream_sends_the_events_as_given(server: FaultServer, client: httpx.Client) -> None:
    server.default = Fault.raw_stream({"choices": "not a list"}, {"anything": [1, 2]})
    events = sse_events(client.post("/chat/completions", json=payload(stream=True)))
    assert [json.loads(e) for e in events[:-1]] == [{"choices": "not a list"}, {"anything": [1, 2]}]
    assert events[-1] == "[DONE]"


def test_scripted_text_and_max_tokens_truncation(server: FaultServer, client: httpx.Client) -> None:
    server.default = Fault.ok(text="one two three four five")
    body = client.post("/chat/completions", json=payload(max_tokens=3)).json()
    events = sse_events(client.post("/chat/completions", json=payload(True, max_tokens=3)))

    assert body["choices"][0]["message"]["content"] == "one two three"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert deltas(events) == "one two three"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_ok_delay_holds_back_the_headers(server: FaultServer, client: httpx.Client) -> None:
    server.script(Fault.ok(delay_s=0.3))
    started = time.monotonic()
    response = client.post("/chat/completions", json=payload())

    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        (Fault.empty(), ""),
        (Fault.whitespace(), "   \n  "),
        (Fault.degenerate(), "the cat sat on the mat " * 40),
    ],
)
def test_useless_answers(
    server: FaultServer, client: httpx.Client, fault: Fault, text: str
) -> None:
    server.default = fault
    body = client.post("/chat/completions", json=payload()).json()
    events = sse_events(client.post("/chat/completions", json=payload(stream=True)))

    assert body["choices"][0]["message"]["content"] == text
    assert body["usage"]["completion_tokens"] == len(text.split())
    assert deltas(events) == text
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1] == "[DONE]"


# -- error statuses ----------------------------------------------------------------------------


def test_status_sends_an_openai_error_body_and_retry_after(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(
        Fault.status(503, retry_after=2, headers={"x-extra": "1"}),
        Fault.status(418, error_code="teapot", message="short and stout", error_type="odd"),
        Fault.status(529),
    )
    first = client.post("/chat/completions", json=payload())
    second = client.post("/chat/completions", json=payload())
    third = client.post("/chat/completions", json=payload())

    assert first.status_code == 503
    assert first.headers["retry-after"] == "2"
    assert first.headers["x-extra"] == "1"
    assert first.json() == {
        "error": {
            "message": "The engine is currently overloaded, please try again later.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert second.status_code == 418
    assert "retry-after" not in second.headers
    assert second.json()["error"] == {
        "message": "short and stout",
        "type": "odd",
        "param": None,
        "code": "teapot",
    }
    assert (third.status_code, third.reason_phrase) == (529, "Error")
    assert third.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("fault", "status", "code", "words"),
    [
        (Fault.rate_limited(retry_after="0.5"), 429, "rate_limit_exceeded", "Rate limit"),
        (Fault.context_length(), 400, "context_length_exceeded", "maximum context length is"),
        (Fault.content_policy(), 400, "content_policy_violation", "safety system"),
        (Fault.content_policy(message="nope"), 400, "content_policy_violation", "nope"),
        (Fault.model_not_found(), 404, "model_not_found", "does not exist"),
        (Fault.invalid_key(echo_key=False), 401, "invalid_api_key", "Incorrect API key"),
    ],
)
def test_convenience_errors(
    server: FaultServer, client: httpx.Client, fault: Fault, status: int, code: str, words: str
) -> None:
    server.default = fault
    response = client.post("/chat/completions", json=payload())

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert error["param"] is None
    assert error["type"] == ("requests" if status == 429 else "invalid_request_error")
    assert response.headers.get("retry-after") == ("0.5" if status == 429 else None)


def test_invalid_key_echoes_the_exact_bearer_token(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.invalid_key(), Fault.invalid_key(echo_key=False))
    secret = {"Authorization": "Bearer sk-live-SECRET123"}
    echoed = client.post("/chat/completions", json=payload(), headers=secret)
    hidden = client.post("/chat/completions", json=payload(), headers=secret)

    assert echoed.status_code == 401
    assert "Incorrect API key provided: sk-live-SECRET123." in echoed.json()["error"]["message"]
    assert "sk-live-SECRET123" not in hidden.text
    assert server.requests[0].headers["authorization"] == "Bearer sk-live-SECRET123"


def test_reject_prefill_only_rejects_a_trailing_assistant_message(
    server: FaultServer, client: httpx.Client
) -> None:
    server.default = Fault.reject_prefill()
    prefill = [*MESSAGES, {"role": "assistant", "content": "Sure,"}]
    rejected = client.post("/chat/completions", json={"model": "m-1", "messages": prefill})
    accepted = client.post("/chat/completions", json=payload())

    assert rejected.status_code == 400
    assert rejected.json()["error"] == {
        "message": "This model does not support assistant message prefill",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert accepted.status_code == 200
    assert accepted.json()["choices"][0]["message"]["content"] == ECHO


# -- connection-level faults -------------------------------------------------------------------


def test_reset_is_a_connection_reset_without_any_response(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.ok(), Fault.reset())
    assert client.post("/chat/completions", json=payload()).status_code == 200

    with pytest.raises(httpx.ReadError, match="reset by peer"):  # on the pooled connection
        client.post("/chat/completions", json=payload())
    assert client.post("/chat/completions", json=payload()).status_code == 200
    first, reset, after = server.requests
    assert reset.fault == Fault.reset()
    assert first.connection == reset.connection != after.connection


def test_hang_sends_nothing_until_the_client_times_out(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.hang())
    started = time.monotonic()

    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=payload(), timeout=0.3)
    assert time.monotonic() - started >= 0.3  # it waited for the client to give up
    assert [r.fault for r in server.requests] == [Fault.hang()]


def test_hang_with_seconds_then_closes_without_a_response(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.hang(seconds=0.2))

    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.post("/chat/completions", json=payload())


def test_a_client_that_leaves_a_hang_or_stall_is_recorded(server: FaultServer) -> None:
    server.script(Fault.hang(), Fault.stall(1))
    for n, streaming in enumerate((False, True), start=1):
        request = json.dumps(payload(stream=streaming)).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(request)}\r\n\r\n".encode()
                + request
            )
            received = b""
            while streaming and b"data: " not in received:  # the first chunk, then silence
                received += sock.recv(65536)
            _wait_for(lambda n=n: len(server.completions) == n)  # type: ignore[misc]
    _wait_for(lambda: len(server.client_closed) == 2)
    assert server.client_closed == [r.connection for r in server.completions]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def test_slow_first_token_sends_headers_at_once_then_waits(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.slow_first_token(0.5), Fault.slow_first_token(0.3))
    started = time.monotonic()
    with client.stream("POST", "/chat/completions", json=payload(stream=True)) as response:
        lines = [line for line in response.iter_lines() if line]
        first_token_at = time.monotonic() - started
    plain = client.post("/chat/completions", json=payload())

    assert response.status_code == 200
    # That the headers come at once is shown where it matters, without a clock limit: the
    # cascade's test of this fault sees "no first token", not "no response".
    assert first_token_at >= 0.5
    assert lines[-1] == "data: [DONE]"
    assert plain.json()["choices"][0]["message"]["content"] == ECHO
    assert plain.elapsed.total_seconds() >= 0.3


def test_cut_stops_mid_stream_without_terminating_chunk(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.cut(2), Fault.cut(1, reset=True))

    lines, error = read_stream(client, "cut")
    assert isinstance(error, httpx.RemoteProtocolError)
    assert "incomplete chunked read" in str(error)
    assert deltas([line.removeprefix("data: ") for line in lines]) == "Echo: say"

    lines, error = read_stream(client, "cut reset")
    assert isinstance(error, httpx.ReadError)
    assert "reset by peer" in str(error)
    assert deltas([line.removeprefix("data: ") for line in lines]) == "Echo:"


def test_cut_non_streaming_sends_half_a_body(server: FaultServer, client: httpx.Client) -> None:
    server.script(Fault.cut(0))

    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        client.post("/chat/completions", json=payload())


def test_stall_goes_silent_mid_stream(server: FaultServer, client: httpx.Client) -> None:
    server.script(Fault.stall(1), Fault.stall(3, seconds=0.2))

    lines: list[str] = []
    timeout = httpx.Timeout(5.0, read=0.3)
    body = payload(stream=True)
    with (
        client.stream("POST", "/chat/completions", json=body, timeout=timeout) as response,
        pytest.raises(httpx.ReadTimeout),
    ):
        lines.extend(line for line in response.iter_lines() if line)
    assert deltas([line.removeprefix("data: ") for line in lines]) == "Echo:"

    lines, error = read_stream(client, "stall then close")
    assert isinstance(error, httpx.RemoteProtocolError)
    assert deltas([line.removeprefix("data: ") for line in lines]) == "Echo: say something"


def test_malformed_chunk_is_an_undecodable_data_line_then_the_rest(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.malformed_chunk(2), Fault.malformed_chunk(0))
    events = sse_events(client.post("/chat/completions", json=payload(stream=True)))
    plain = client.post("/chat/completions", json=payload())

    assert events[2] == '{"choices": ['
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[2])
    assert deltas(events[:2] + events[3:]) == ECHO
    assert events[-1] == "[DONE]"
    assert plain.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        plain.json()


def test_no_done_ends_the_stream_cleanly_without_done(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.no_done(), Fault.no_done(finish_reason=False))
    body = payload(stream=True, stream_options={"include_usage": True})
    with_finish = sse_events(client.post("/chat/completions", json=body))
    without_finish = sse_events(client.post("/chat/completions", json=body))

    assert "[DONE]" not in with_finish
    assert json.loads(with_finish[-1])["usage"]["completion_tokens"] == 4
    assert json.loads(with_finish[-2])["choices"][0]["finish_reason"] == "stop"
    assert "[DONE]" not in without_finish
    assert deltas(without_finish) == ECHO
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in without_finish)


def test_refused_port_refuses_connections() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{refused_port()}/v1/chat/completions", json=payload())


# -- server plumbing ---------------------------------------------------------------------------


def test_script_is_fifo_then_default_on_one_keep_alive_connection(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.status(500), Fault.rate_limited(), Fault.ok(text="third"))
    server.default = Fault.ok(text="default")
    responses = [client.post("/chat/completions", json=payload()) for _ in range(4)]

    assert [r.status_code for r in responses] == [500, 429, 200, 200]
    contents = [r.json()["choices"][0]["message"]["content"] for r in responses[2:]]
    assert contents == ["third", "default"]
    assert server.pending == 0
    assert len({r.connection for r in server.requests}) == 1  # keep-alive, errors included
    assert [r.fault for r in server.completions] == [
        Fault.status(500),
        Fault.rate_limited(),
        Fault.ok(text="third"),
        Fault.ok(text="default"),
    ]


def test_models_and_unknown_routes() -> None:
    with FaultServer(models=["alpha"]) as server, httpx.Client(base_url=server.base_url) as http:
        http.post("/chat/completions", json=payload())
        models = http.get("/models")
        missing = http.get("/nope")
        bad_json = http.post("/chat/completions", content=b"{not json")

    assert models.json() == {
        "object": "list",
        "data": [
            {"id": "alpha", "object": "model", "created": 0, "owned_by": "faults"},
            {"id": "m-1", "object": "model", "created": 0, "owned_by": "faults"},
        ],
    }
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_url"
    assert bad_json.status_code == 400
    completions, models_path = "/v1/chat/completions", "/v1/models"
    assert [r.path for r in server.requests] == [completions, models_path, "/v1/nope", completions]
    assert len(server.completions) == 1


def test_the_models_route_can_fail_on_cue_without_touching_completions() -> None:
    with FaultServer(models=["alpha"]) as server, httpx.Client(base_url=server.base_url) as http:
        server.models_fault = Fault.status(503)
        failed = http.get("/models")
        server.models_fault = None
        listed = http.get("/models")
    assert failed.status_code == 503
    assert (
        failed.json()["error"]["message"]
        == "The engine is currently overloaded, please try again later."
    )
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["alpha"]
    assert server.completions == []


async def test_works_from_async_tests(server: FaultServer) -> None:
    server.script(Fault.status(502))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
        failed = await http.post("/chat/completions", json=payload())
        async with http.stream("POST", "/chat/completions", json=payload(stream=True)) as stream:
            lines = [line async for line in stream.aiter_lines() if line]

    assert failed.status_code == 502
    assert lines[-1] == "data: [DONE]"


def test_stop_closes_hanging_connections_and_is_idempotent() -> None:
    server = FaultServer(default=Fault.hang()).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{server.base_url}/chat/completions", json=payload(), timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    server.stop()
    worker.join(timeout=5)

    assert time.monotonic() - started < 2
    assert len(errors) == 1
    assert isinstance(errors[0], httpx.RemoteProtocolError | httpx.ReadError)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models")


# -- wire-format faults ------------------------------------------------------------------------


def test_json_answer_ignores_stream_true_and_has_no_final_newline(
    server: FaultServer, client: httpx.Client
) -> None:
    server.default = Fault.json_answer(text="one two")
    response = client.post("/chat/completions", json=payload(stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert not response.content.endswith(b"\n")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["usage"]["completion_tokens"] == 2


def test_raw_and_proxy_error_send_exactly_their_body(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.raw(200, "application/json", b'{"object": "list"}'), Fault.proxy_error())
    raw = client.post("/chat/completions", json=payload(stream=True))
    page = client.post("/chat/completions", json=payload(stream=True))

    assert (raw.status_code, raw.headers["content-type"]) == (200, "application/json")
    assert raw.content == b'{"object": "list"}'
    assert (page.status_code, page.headers["content-type"]) == (502, "text/html")
    assert page.text.startswith("<html>")
    assert "<title>502 Bad Gateway</title>" in page.text


def test_no_final_newline_leaves_the_last_line_unterminated(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.no_final_newline(), Fault.no_final_newline(done=False))
    body = payload(stream=True, stream_options={"include_usage": True})
    with_done = client.post("/chat/completions", json=body).text
    without_done = client.post("/chat/completions", json=body).text

    assert with_done.endswith("\n\ndata: [DONE]")
    assert "[DONE]" not in without_done
    last = without_done.rsplit("\n", 1)[-1]
    assert json.loads(last.removeprefix("data: "))["usage"]["completion_tokens"] == 4


def test_keep_alive_sends_comment_lines_and_never_a_token(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.keep_alive(1, interval_s=0.05, comment=": OPENROUTER PROCESSING"))
    lines: list[str] = []
    with client.stream("POST", "/chat/completions", json=payload(stream=True)) as response:
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if len(lines) == 4:
                break

    assert deltas([lines[0].removeprefix("data: ")]) == "Echo:"
    assert lines[1:] == [": OPENROUTER PROCESSING"] * 3


def test_keep_alive_with_seconds_then_closes_mid_body(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.keep_alive(interval_s=0.05, seconds=0.2))

    lines, error = read_stream(client, "keep_alive")
    assert isinstance(error, httpx.RemoteProtocolError)
    assert lines
    assert set(lines) == {": keep-alive"}


def test_huge_line_is_one_content_event_of_that_size(
    server: FaultServer, client: httpx.Client
) -> None:
    server.default = Fault.huge_line(100_000)
    events = sse_events(client.post("/chat/completions", json=payload(stream=True)))
    plain = client.post("/chat/completions", json=payload())

    assert deltas(events) == "x" * 100_000
    assert len(events[0]) > 100_000
    assert events[-1] == "[DONE]"
    assert plain.json()["choices"][0]["message"]["content"] == "x" * 100_000


def test_crlf_ends_every_stream_line_in_crlf(server: FaultServer, client: httpx.Client) -> None:
    server.default = Fault.crlf()
    text = client.post("/chat/completions", json=payload(stream=True)).text

    assert text.endswith("data: [DONE]\r\n\r\n")
    assert "\n" not in text.replace("\r\n", "")
    events = [e.removeprefix("data: ") for e in text.split("\r\n\r\n")[:-1]]
    assert deltas(events) == ECHO


def test_linger_sends_done_but_never_the_end_of_the_body(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.linger(seconds=0.2))

    lines, error = read_stream(client, "linger")
    assert isinstance(error, httpx.RemoteProtocolError)  # the close came, not the end
    assert lines[-1] == "data: [DONE]"
    assert deltas([line.removeprefix("data: ") for line in lines[:-1]]) == ECHO


def test_leak_quotes_the_key_split_across_two_events_and_as_the_model(
    server: FaultServer, client: httpx.Client
) -> None:
    server.script(Fault.leak(), Fault.leak("other-secret-0123456789"))
    secret = {"Authorization": "Bearer sk-live-SECRET123"}
    events = sse_events(client.post("/chat/completions", json=payload(True), headers=secret))
    plain = client.post("/chat/completions", json=payload(), headers=secret).json()

    pieces = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert pieces == ["The key is ", "sk-live-", "SECRET123", ", as you asked."]
    assert {json.loads(e)["model"] for e in events[:-1]} == {"sk-live-SECRET123"}
    content = "The key is other-secret-0123456789, as you asked."
    assert plain["choices"][0]["message"]["content"] == content
    assert plain["model"] == "other-secret-0123456789"
