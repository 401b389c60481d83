"""One choice of an OpenAI-compatible stream: what each chunk passes on, and what they add up to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sincere.errors import UpstreamError
from sincere.llm.provider import Delta
from sincere.redact import StreamRedactor
from sincere.tool_calls import ToolCall, ToolCallFragment, assemble


class StreamedChoice:
    """Reads ``choices[i]`` of each chunk: text, tool-call fragments and logprobs, in order.

    Each chunk's pieces are passed on as they came (``add``); the completion is their sum.
    A malformed piece is the upstream's fault (``UpstreamError``), never skipped: a tool call
    with a piece missing would call the caller's function with other arguments.
    """

    def __init__(self, deployment: str, secrets: StreamRedactor | None = None) -> None:
        self._deployment = deployment
        self._secrets = secrets  # known keys are removed from the text as it passes
        self.pieces = 0  # chunks that carried text or a tool call (held text included)
        self._text: list[str] = []
        self._fragments: list[ToolCallFragment] = []
        self._logprobs: dict[str, list[Any]] = {}

    def add(self, choice: Mapping[str, Any]) -> Delta | None:
        """The piece this chunk carries, or None when it carries no text and no tool call."""
        delta = choice.get("delta") or {}
        if not isinstance(delta, Mapping):
            raise self._malformed("a delta that is not an object")
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise self._malformed("content that is not a string")
        calls = self._tool_calls(delta.get("tool_calls"))
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, Mapping):
            logprobs = None
        if not text and not calls:
            return None
        self.pieces += 1
        if self._secrets is not None and text:
            text = self._secrets.feed(text)
            if not text and not calls:
                return None  # held: it may be the start of a key
        self._text.append(text)
        self._fragments.extend(calls)
        for key, items in (logprobs or {}).items():
            if isinstance(items, list):
                self._logprobs.setdefault(key, []).extend(items)
        return Delta(text, tool_calls=calls, logprobs=logprobs)

    def flush(self) -> Delta | None:
        """The text the redactor still holds, once the stream has ended."""
        held = self._secrets.flush() if self._secrets is not None else ""
        if not held:
            return None
        self._text.append(held)
        return Delta(held)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        try:
            return assemble(self._fragments)
        except ValueError as exc:
            raise self._malformed(f"an incomplete tool call ({exc})") from None

    @property
    def logprobs(self) -> dict[str, list[Any]] | None:
        return dict(self._logprobs) if self._logprobs else None

    def _tool_calls(self, raw: object) -> tuple[ToolCallFragment, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self._malformed("tool_calls that are not a list")
        return tuple(self._fragment(item) for item in raw)

    def _fragment(self, item: object) -> ToolCallFragment:
        if not isinstance(item, Mapping) or not isinstance(item.get("index"), int):
            raise self._malformed("a tool call without an index")
        function = item.get("function") or {}
        if not isinstance(function, Mapping):
            raise self._malformed("a tool call whose function is not an object")
        members = [
            item.get("id"),
            item.get("type"),
            function.get("name"),
            function.get("arguments"),
        ]
        if not all(m is None or isinstance(m, str) for m in members):
            raise self._malformed("a tool call with a member that is not a string")
        return ToolCallFragment(item["index"], *members)

    def _malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"{self._deployment}: the stream carried {what}")
