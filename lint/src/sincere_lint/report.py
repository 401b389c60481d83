"""Findings rendered for people (text), for scripts (JSON) and for code scanning (SARIF)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sincere_lint import __version__
from sincere_lint.rules import RULES
from sincere_lint.runner import Finding

FORMATS = ("text", "json", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://sincere.dev/lint"


def render(findings: Sequence[Finding], format: str) -> str:
    """The findings in one of ``FORMATS``."""
    if format == "json":
        return to_json(findings)
    if format == "sarif":
        return json.dumps(to_sarif(findings), indent=2)
    return "".join(f"{finding}\n" for finding in findings)


def to_json(findings: Sequence[Finding]) -> str:
    """A JSON array of ``{path, line, column, code, message}`` (1-based line and column)."""
    rows = [
        {"path": f.path, "line": f.line, "column": f.column, "code": f.code, "message": f.message}
        for f in findings
    ]
    return json.dumps(rows, indent=2, ensure_ascii=False)


def to_sarif(findings: Sequence[Finding]) -> dict[str, Any]:
    """One SARIF 2.1.0 log with one run, every rule described, every finding an error."""
    index = {code: i for i, code in enumerate(RULES)}
    rules = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.explanation.strip()},
            "help": {"text": rule.explain()},
            "defaultConfiguration": {"level": "error"},
        }
        for rule in RULES.values()
    ]
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": "error",
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.path)},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
        }
        for f in findings
    ]
    driver = {
        "name": "sincere-lint",
        "version": __version__,
        "semanticVersion": __version__,
        "informationUri": INFORMATION_URI,
        "rules": rules,
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {"tool": {"driver": driver}, "columnKind": "unicodeCodePoints", "results": results}
        ],
    }


def _uri(path: str) -> str:
    """A relative path stays a relative URI reference; an absolute one becomes ``file://``."""
    as_path = Path(path)
    return as_path.as_uri() if as_path.is_absolute() else path
