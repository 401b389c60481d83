"""One walk over a module's tree, keeping the nodes the checks ask about by kind."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

# Nodes with no node below them but contexts and operators, which no check asks about.
_LEAVES: tuple[type[ast.AST], ...] = (ast.Name, ast.Constant, ast.alias, ast.expr_context)
_LEAVES += (ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


class _ChildFields(dict[type[ast.AST], tuple[str, ...]]):
    """The fields of each node class that may hold nodes, computed once per class."""

    def __missing__(self, cls: type[ast.AST]) -> tuple[str, ...]:
        fields = () if issubclass(cls, _LEAVES) else tuple(f for f in cls._fields if f != "ctx")
        self[cls] = fields
        return fields


_CHILD_FIELDS = _ChildFields()
_INDEXED = frozenset(
    {ast.Name, ast.Attribute, ast.Call, ast.Constant, ast.ClassDef, ast.Import, ast.ImportFrom}
    | {ast.Raise, ast.Yield, ast.YieldFrom}
)


def walk(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a tree in ``ast.walk``'s order (breadth first), but for expression
    contexts and operators, twice as fast: the walk is much of the checker's time."""
    queue: deque[ast.AST] = deque([tree])
    while queue:
        node = queue.popleft()
        for name in _CHILD_FIELDS[type(node)]:
            value = getattr(node, name)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST):
                        queue.append(item)
            elif isinstance(value, ast.AST):
                queue.append(value)
        yield node


@dataclass(slots=True)
class ModuleIndex:
    """The nodes of one module that the checks need, collected in a single walk."""

    classes: list[ast.ClassDef] = field(default_factory=list)
    imports: list[ast.Import | ast.ImportFrom] = field(default_factory=list)
    raises: list[ast.Raise] = field(default_factory=list)
    calls: list[ast.Call] = field(default_factory=list)
    # Reads of names and attributes, by name: who uses a function.
    uses: dict[str, list[ast.Name | ast.Attribute]] = field(default_factory=dict)
    strings: set[str] = field(default_factory=set)
    # The lines with a ``yield``, sorted: most statements need not be searched for one.
    yield_lines: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, tree: ast.Module) -> ModuleIndex:
        index = cls()
        for node in walk(tree):
            if type(node) not in _INDEXED:
                continue
            if isinstance(node, ast.Name):
                if type(node.ctx) is ast.Load:
                    index.uses.setdefault(node.id, []).append(node)
            elif isinstance(node, ast.Attribute):
                index.uses.setdefault(node.attr, []).append(node)
            elif isinstance(node, ast.Call):
                index.calls.append(node)
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, str) and len(node.value) < 80:
                    index.strings.add(node.value)
            elif isinstance(node, ast.ClassDef):
                index.classes.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                index.imports.append(node)
            elif isinstance(node, ast.Raise):
                index.raises.append(node)
            elif isinstance(node, (ast.Yield, ast.YieldFrom)):
                index.yield_lines.append(node.lineno)
        index.yield_lines.sort()
        return index
