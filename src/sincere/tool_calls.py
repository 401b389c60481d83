"""Tool calls a model asked for: whole (in answers and in a tool loop's history), and as the
fragments a stream delivers them in.

Arguments are the JSON text exactly as the model wrote it: never parsed, repaired or
re-serialized, so what the caller receives is what the model produced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a function tool, as in ``message.tool_calls``."""

    id: str
    name: str
    arguments: str
    type: str = "function"

    def to_dict(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": self.type, "function": function}


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """One streamed piece of a tool call (``delta.tool_calls[i]``); absent members stay absent.

    The first fragment of a call usually carries its id, type and name; later ones carry
    pieces of the arguments, to be concatenated in order.
    """

    index: int
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
        if self.type is not None:
            out["type"] = self.type
        function: dict[str, str] = {}
        if self.name is not None:
            function["name"] = self.name
        if self.arguments is not None:
            function["arguments"] = self.arguments
        if function:
            out["function"] = function
        return out


def assemble(fragments: Iterable[ToolCallFragment]) -> tuple[ToolCall, ...]:
    """The whole calls the fragments add up to, in index order.

    The first id, type and name seen for an index are the call's; the arguments are every
    fragment's arguments, joined in arrival order. Raises ValueError for a call that never
    got an id or a name: it could not be answered by the caller.
    """
    calls: dict[int, dict[str, Any]] = {}
    for f in fragments:
        call = calls.setdefault(f.index, {"id": None, "type": None, "name": None, "args": []})
        for key, value in (("id", f.id), ("type", f.type), ("name", f.name)):
            if call[key] is None and value:
                call[key] = value
        if f.arguments:
            call["args"].append(f.arguments)
    whole = []
    for index in sorted(calls):
        call = calls[index]
        if not call["id"] or not call["name"]:
            raise ValueError(f"tool call {index} has no {'id' if not call['id'] else 'name'}")
        whole.append(
            ToolCall(call["id"], call["name"], "".join(call["args"]), call["type"] or "function")
        )
    return tuple(whole)
