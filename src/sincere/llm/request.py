"""What a caller asks a model for, and the limits one attempt runs under."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request, independent of any provider's wire format."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None  # sampling seed, for reproducible runs (the embedded model)
    # An earlier attempt of this request ended in a loop: sample with stronger repetition
    # penalties (the embedded model; see EmbeddedProvider).
    loop_retry: bool = False

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

    def wire_messages(self) -> list[dict[str, str]]:
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
