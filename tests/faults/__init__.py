"""Local OpenAI-compatible test doubles that misbehave on cue."""

from tests.faults.server import Fault, FaultServer, RecordedRequest, refused_port, tool_call_deltas

__all__ = ["Fault", "FaultServer", "RecordedRequest", "refused_port", "tool_call_deltas"]
