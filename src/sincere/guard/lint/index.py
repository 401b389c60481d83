"""One walk over a module's tree, keeping the nodes the checks ask about by kind."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


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
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
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
