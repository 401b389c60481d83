"""sincere: an LLM gateway and agent backend that never fakes an answer."""

from sincere.answer import Answer, Completion, Provenance, Usage
from sincere.attempts import Attempt
from sincere.auth import Authenticator
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, RequestContext, Tier
from sincere.errors import (
    BadRequest,
    ConfigError,
    ContentRejected,
    ContextTooLong,
    DataUnavailable,
    ErrorContext,
    ModelNotFound,
    ProviderAuthFailed,
    RateLimited,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UnsupportedParameter,
    UpstreamError,
)
from sincere.events import Event, EventType
from sincere.health import HealthReport, HealthState, ServiceRegistry
from sincere.identity import Caller
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest, Message
from sincere.pipeline import ChatPipeline
from sincere.ports import EventBus
from sincere.runtime import Runtime, build_runtime
from sincere.tool_calls import ToolCall

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Attempt",
    "Authenticator",
    "BadRequest",
    "Caller",
    "ChatPipeline",
    "ChatRequest",
    "Completion",
    "ConfigError",
    "ContentRejected",
    "ContextFactory",
    "ContextTooLong",
    "DataUnavailable",
    "Delta",
    "ErrorContext",
    "Event",
    "EventBus",
    "EventType",
    "HealthReport",
    "HealthState",
    "Message",
    "ModelCascade",
    "ModelNotFound",
    "Provenance",
    "ProviderAuthFailed",
    "RateLimited",
    "RequestContext",
    "Runtime",
    "ServiceError",
    "ServiceRegistry",
    "ServiceTimeout",
    "ServiceUnavailable",
    "Settings",
    "Tier",
    "ToolCall",
    "UnsupportedParameter",
    "UpstreamError",
    "Usage",
    "build_runtime",
    "load_settings",
]
