"""The number rule: a narrative may state only numbers its findings hold.

Every number written in a narrative (integers, decimals, thousands separators, ``%``,
``$``, ``ms``/``s``, ``k``/``M``) must be the value of one of the findings' figures as a
writer shows it: rounded to the decimals the narrative shows (12.3456 as "12.3" or "12",
never "12.4"), a fraction as a percentage (0.25 as "25%"), seconds as milliseconds
(0.4215 s as "422 ms"). Anything else is invented, and the narrative is rejected.

Strict on purpose: a list marker ("1.") or a number of the question's wording counts like
any other. Only two kinds of digits are not read as numbers: those glued to letters
before or after them (``p95``, ``gpt4o``: names, not quantities), and the names and the
window label the findings themselves carry (``SmolLM2-135M-Instruct``, ``7d``), removed
before the text is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sincere.errors import NumbersRejected, QualityRejected


class Unit(StrEnum):
    """What a figure measures: decides how a writer may show it."""

    USD = "usd"
    SECONDS = "s"
    RATIO = "ratio"  # a fraction of 1: shown as it is or as a percentage
    COUNT = "count"  # requests, tokens, days: shown as it is


@dataclass(frozen=True, slots=True)
class Figure:
    value: float
    unit: Unit


@dataclass(frozen=True, slots=True)
class Stated:
    """One number as the narrative writes it."""

    text: str  # exactly as written ("$0.42", "25%", "1,204")
    value: float  # the number as written (25 for "25%")
    decimals: int  # the decimals written: the precision the writer claims
    scale: float  # k and M: 1e3, 1e6; else 1
    kind: str  # "percent", "usd", "ms", "s" or "" (no unit written)


_NUMBER = re.compile(
    r"(?<![\w.,])"  # not inside a word or another number
    r"(?P<cur>\$\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<unit>\s?%|\s(?:percent|per cent)\b|\s?(?:ms|milliseconds?)\b"
    r"|\s?(?:s|secs?|seconds?)\b|[kKM]\b)?"
    r"(?![\w])"  # not followed by a word: "4o", "95th" are names
)


def stated_numbers(text: str, names: Iterable[str] = ()) -> list[Stated]:
    """Every number ``text`` states, once the ``names`` (longest first) are taken out."""
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        text = text.replace(name, " ")
    found = []
    for m in _NUMBER.finditer(text):
        raw = m.group("num")
        unit = (m.group("unit") or "").strip().lower()
        scale = 1.0
        if unit == "k":
            scale, kind = 1e3, ""
        elif unit == "m":
            scale, kind = 1e6, ""
        elif unit in ("%", "percent", "per cent"):
            kind = "percent"
        elif unit in ("ms", "millisecond", "milliseconds"):
            kind = "ms"
        elif unit:
            kind = "s"
        else:
            kind = ""
        if m.group("cur"):
            kind = "usd"
        decimals = len(raw.split(".", 1)[1]) if "." in raw else 0
        found.append(Stated(m.group(0).strip(), float(raw.replace(",", "")), decimals, scale, kind))
    return found


def _readings(figure: Figure, kind: str) -> list[float]:
    """The values a writer may show for ``figure`` with a number of this kind."""
    v = abs(figure.value)
    if kind == "percent":
        return [v * 100] if figure.unit is Unit.RATIO else []
    if kind == "ms":
        return [v * 1000] if figure.unit is Unit.SECONDS else []
    if kind == "s":
        return [v] if figure.unit is Unit.SECONDS else []
    if kind == "usd":
        return [v] if figure.unit is Unit.USD else []
    readings = [v]  # no unit written: the value, or the usual ways of showing it
    if figure.unit is Unit.RATIO:
        readings.append(v * 100)
    elif figure.unit is Unit.SECONDS:
        readings.append(v * 1000)
    return readings


def matches(stated: Stated, figure: Figure) -> bool:
    """Whether ``stated`` is ``figure`` rounded to the decimals it shows."""
    shown = stated.value * stated.scale
    tolerance = 0.5 * 10 ** (-stated.decimals) * stated.scale
    return any(
        abs(shown - reading) <= tolerance * (1 + 1e-9) + 1e-12
        for reading in _readings(figure, stated.kind)
        if math.isfinite(reading)
    )


def invented(text: str, figures: Iterable[Figure], names: Iterable[str] = ()) -> list[str]:
    """The numbers of ``text`` that no figure holds, as written (empty: it passes)."""
    allowed = list(figures)
    return [s.text for s in stated_numbers(text, names) if not any(matches(s, f) for f in allowed)]


@dataclass(frozen=True, slots=True)
class NumberRule:
    """The check a narrative request carries (``ChatRequest.answer_check``)."""

    figures: tuple[Figure, ...]
    names: tuple[str, ...]

    def __call__(self, text: str) -> QualityRejected | None:
        bad = invented(text, self.figures, self.names)
        if not bad:
            return None
        shown = ", ".join(repr(b) for b in bad[:10]) + (" …" if len(bad) > 10 else "")
        return NumbersRejected(
            f"the narrative states {len(bad)} number{'s' if len(bad) != 1 else ''} "
            f"that no finding holds: {shown}"
        )
