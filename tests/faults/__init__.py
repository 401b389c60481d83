"""Local OpenAI-compatible test doubles that misbehave on cue."""

from tests.faults.server import Fault, FaultServer, RecordedRequest, refused_port

__all__ = ["Fault", "FaultServer", "RecordedRequest", "refused_port"]
