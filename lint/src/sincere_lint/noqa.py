"""``# noqa`` comments: ``# noqa: SIN001`` silences that rule on its line, ``# noqa`` all.

Lines are searched from their first ``#``, as flake8 does; a ``#`` inside a string before
the comment only makes the search start earlier.
"""

from __future__ import annotations

import re

_NOQA = re.compile(
    r"#\s*noqa(?::\s?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE
)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)

# For a line: the codes it silences, or None when a bare noqa comment silences them all.
Silenced = dict[int, frozenset[str] | None]


def noqa_lines(source: str) -> Silenced:
    """The ``# noqa`` comments of a module, by line."""
    silenced: Silenced = {}
    if "noqa" not in source.lower():
        return silenced
    for number, line in enumerate(source.splitlines(), 1):
        if "#" in line:
            _add(silenced, number, line[line.index("#") :])
    return silenced


def is_silenced(silenced: Silenced, line: int, code: str) -> bool:
    if line not in silenced:
        return False
    codes = silenced[line]
    return codes is None or code in codes


def _add(silenced: Silenced, line: int, comment: str) -> None:
    match = _NOQA.search(comment)
    if match is None:
        return
    codes = match.group("codes")
    silenced[line] = None if codes is None else frozenset(c.upper() for c in _CODE.findall(codes))
