"""The chat completion request as it arrives: strict types, ranges, and what is forwarded.

Every Chat Completions parameter is relayed to the deployment under its own name with the
caller's value; none is dropped. A value of the wrong JSON type is refused, never coerced
(``max_tokens: "10"`` is a 400 naming ``max_tokens``). Members sincere does not model are
forwarded as they came, so a deployment's own extensions (vLLM's ``top_k``, ...) work; a
deployment that cannot honour one refuses it. Parameters whose answers carry members
sincere does not relay (audio, legacy function calls, web-search annotations) are refused
here, since forwarding them would return an answer without what was asked for.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sincere.errors import BadRequest
from sincere.llm.request import ChatRequest, Message
from sincere.tool_calls import ToolCall

MAX_TOKENS = 2**31 - 1  # the largest token limit accepted (OpenAI's own bound)


class _In(BaseModel):
    """Strict JSON types; unknown members are kept and forwarded."""

    model_config = ConfigDict(strict=True, extra="allow")


class _Closed(BaseModel):
    """Strict JSON types and no unknown members: sincere rebuilds these, so it would drop them."""

    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Closed):
    type: Literal["text"]
    text: str


class FunctionCallIn(_Closed):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCallIn(_Closed):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: FunctionCallIn

    def to_call(self) -> ToolCall:
        return ToolCall(self.id, self.function.name, self.function.arguments, self.type)


def _by(member: str, tags: dict[str, str]) -> Discriminator:
    """Chooses a union's model by the value of ``member``.

    Its variants are tagged by model name, so an error's location names the member at
    fault and no variant; an unknown value is an error about ``member`` itself.
    """

    def tag(value: Any) -> str | None:
        if value is None:
            return "null"  # a nullable union's null
        key = value.get(member) if isinstance(value, dict) else getattr(value, member, None)
        return tags.get(key) if isinstance(key, str) else None

    return Discriminator(
        tag,
        custom_error_type="invalid_tag",
        custom_error_message=f"{member} must be one of: {', '.join(tags)}",
        custom_error_context={"member": member},
    )


Content = str | list[TextPart]


class _MessageIn(_In):
    """What every role's message has; each variant narrows ``role`` and ``content``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None
    name: str | None = None

    def to_message(self) -> Message:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return Message(
            "system" if self.role == "developer" else self.role,
            content,
            self._calls(),
            self._answers(),
            self.name,
            self.model_extra or {},
        )

    def _calls(self) -> tuple[ToolCall, ...]:
        return ()

    def _answers(self) -> str | None:
        return None


class SystemMessageIn(_MessageIn):
    role: Literal["system", "developer"]
    content: Content


class UserMessageIn(_MessageIn):
    role: Literal["user"]
    content: Content


class AssistantMessageIn(_MessageIn):
    role: Literal["assistant"]
    content: Content | None = None  # null, or left out, only beside tool_calls
    tool_calls: list[ToolCallIn] | None = None

    @model_validator(mode="after")
    def _says_or_calls(self) -> Self:
        if self.content is None and not self.tool_calls:
            # Raised with its location, so the 400 names the member (not just the message).
            reason = "an assistant message needs content, or tool_calls with content null"
            error = InitErrorDetails(
                type=PydanticCustomError("missing_content", reason), loc=("content",), input=None
            )
            raise ValidationError.from_exception_data(type(self).__name__, [error])
        return self

    def _calls(self) -> tuple[ToolCall, ...]:
        return tuple(call.to_call() for call in self.tool_calls or ())


class ToolMessageIn(_MessageIn):
    role: Literal["tool"]
    tool_call_id: str = Field(min_length=1)  # the call this result answers
    content: Content

    def _answers(self) -> str | None:
        return self.tool_call_id


ChatMessageIn = Annotated[
    Annotated[SystemMessageIn, Tag("SystemMessageIn")]
    | Annotated[UserMessageIn, Tag("UserMessageIn")]
    | Annotated[AssistantMessageIn, Tag("AssistantMessageIn")]
    | Annotated[ToolMessageIn, Tag("ToolMessageIn")],
    _by(
        "role",
        {
            "system": "SystemMessageIn",
            "developer": "SystemMessageIn",
            "user": "UserMessageIn",
            "assistant": "AssistantMessageIn",
            "tool": "ToolMessageIn",
        },
    ),
]


class StreamOptions(_In):
    include_usage: bool = False


class FunctionIn(_In):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_In):
    type: Literal["function"]
    function: FunctionIn


class ToolChoiceIn(_In):
    type: str  # "function" with {"function": {"name": ...}}, "allowed_tools", ...


class JsonSchemaIn(_In):
    name: str = Field(min_length=1)  # schema, strict, description: forwarded as they came


class TextFormatIn(_In):
    type: Literal["text"]


class JsonObjectFormatIn(_In):
    type: Literal["json_object"]


class JsonSchemaFormatIn(_In):
    type: Literal["json_schema"]
    json_schema: JsonSchemaIn


ResponseFormatIn = Annotated[
    Annotated[TextFormatIn, Tag("TextFormatIn")]
    | Annotated[JsonObjectFormatIn, Tag("JsonObjectFormatIn")]
    | Annotated[JsonSchemaFormatIn, Tag("JsonSchemaFormatIn")]
    | Annotated[None, Tag("null")],
    _by(
        "type",
        {
            "text": "TextFormatIn",
            "json_object": "JsonObjectFormatIn",
            "json_schema": "JsonSchemaFormatIn",
        },
    ),
]


TokenId = Annotated[str, Field(pattern=r"^[0-9]+$")]
Bias = Annotated[int, Field(ge=-100, le=100)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenLimit = Annotated[int, Field(ge=1, le=MAX_TOKENS)]

_NOT_RELAYED = {
    "functions": "the deprecated functions API is not supported; use tools",
    "function_call": "the deprecated functions API is not supported; use tool_choice",
    "audio": "audio answers are not relayed",
    "web_search_options": "web search annotations are not relayed",
}
# Any value but null is refused, with the reason above (the schema says: null only).
Refused = Annotated[Any, WithJsonSchema({"type": "null", "description": "Refused: not relayed."})]
# Read by sincere itself (stream, stream_options) or typed in ChatRequest; all else is extra.
_OWN = {"model", "messages", "stream", "stream_options", "max_tokens", "temperature", "stop"}


class ChatCompletionIn(_In):
    """The OpenAI chat completion request; members not listed here are forwarded as sent."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is supported.")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    # Forwarded as given: llama.cpp and vLLM take any number; OpenAI refuses more than 4.
    stop: str | list[str] | None = None
    logit_bias: dict[TokenId, Bias] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatIn = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    prediction: dict[str, Any] | None = None
    modalities: list[Literal["text"]] | None = None
    functions: Refused = None
    function_call: Refused = None
    audio: Refused = None
    web_search_options: Refused = None

    @field_validator(*_NOT_RELAYED)
    @classmethod
    def _not_relayed(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            raise ValueError(_NOT_RELAYED[str(info.field_name)])
        return value

    def to_request(self) -> ChatRequest:
        """The domain request; BadRequest naming the member that cannot be forwarded as sent."""
        # Only what the caller set, as it was set (no defaults added).
        extra = {name: _plain(getattr(self, name)) for name in self.model_fields_set - _OWN}
        messages = tuple(m.to_message() for m in self.messages)
        for name, value in extra.items():
            _forwardable(name, value)
        for i, message in enumerate(messages):
            for name, value in message.extra.items():
                _forwardable(f"messages[{i}].{name}", value)
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return ChatRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=tuple(stop),
            extra=extra,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _forwardable(param: str, value: Any) -> None:
    """Raise BadRequest for a number JSON encoders cannot write back as it was sent."""
    if isinstance(value, dict):
        for item in value.values():
            _forwardable(param, item)
    elif isinstance(value, list):
        for item in value:
            _forwardable(param, item)
    elif isinstance(value, bool | str) or value is None:
        return
    elif (isinstance(value, int) and not -(2**63) <= value < 2**64) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise BadRequest(
            f"invalid request: {param}: a number outside the range JSON can carry", param=param
        )
