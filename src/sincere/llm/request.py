"""What a caller asks a model for, and the limits one attempt runs under."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sincere.errors import QualityRejected
from sincere.tool_calls import ToolCall

AnswerCheck = Callable[[str], QualityRejected | None]
"""A caller's own check of a finished answer's text: the rejection (a failed attempt, as
the quality gate's: not retried, not counted by the breaker), or None when it passes."""

MessageRole = Literal["system", "user", "assistant", "tool"]
"""Who speaks in a chat message (not to be confused with a key's ``identity.KeyRole``)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``content`` is None only for an assistant turn that called tools.

    ``extra`` holds the members sincere does not model, forwarded as the caller sent them.
    """

    role: MessageRole
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request, independent of any provider's wire format.

    ``extra`` holds every other Chat Completions parameter (``tools``, ``top_p``, ``seed``,
    ``max_completion_tokens``, ...) under its API name with the caller's value: an
    OpenAI-compatible deployment receives them unchanged; a deployment that cannot honour
    one refuses the request (``UnsupportedParameter``) rather than ignore it.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    # An earlier attempt of this request ended in a loop: sample with stronger repetition
    # penalties (the embedded model; see EmbeddedProvider).
    loop_retry: bool = False
    # The caller's check of each finished answer (the analyst's number rule); None: none.
    # Never sent upstream. In a stream the text has reached the caller before the check,
    # so a rejection there ends the stream in error, as the quality gate's does.
    answer_check: AnswerCheck | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        model: str,
        messages: Sequence[Mapping[str, str]] | str,
        **kwargs: Any,
    ) -> ChatRequest:
        """Build from OpenAI-style message dicts, or from a single user prompt."""
        msgs: tuple[Message, ...]
        if isinstance(messages, str):
            msgs = (Message("user", messages),)
        else:
            msgs = tuple(Message(m["role"], m["content"]) for m in messages)  # type: ignore[arg-type]
        return cls(model=model, messages=msgs, **kwargs)

    @property
    def token_limit(self) -> int | None:
        """The most tokens to generate: the smaller of ``max_tokens`` and
        ``max_completion_tokens`` when both are given (each is a limit the caller set)."""
        limits = [
            n for n in (self.max_tokens, self.extra.get("max_completion_tokens")) if n is not None
        ]
        return min(limits) if limits else None

    def wire_messages(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.messages]


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """The waits one attempt may spend; the cascade derives them from config and deadline."""

    total_s: float
    connect_s: float
    first_token_s: float
    stream_idle_s: float
    # The longest wait for a busy local worker before generation starts (also within total_s).
    queue_s: float | None = None
