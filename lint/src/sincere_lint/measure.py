"""Recall and false positives of the checker on a labelled corpus.

A corpus has ``mock/*.py`` (fabrications; each expected finding marked on its line with
``# expect: SIN001`` or ``# expect: SIN004, SIN005``) and ``honest/*.py`` (code that must
stay clean)::

    python -m sincere_lint.measure tests/lint/corpus
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sincere_lint.runner import Finding, lint_paths

_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)")

# (file, line, code)
Label = tuple[str, int, str]


@dataclass(slots=True)
class Score:
    """How the checker did on one corpus."""

    expected: set[Label] = field(default_factory=set)
    found: set[Label] = field(default_factory=set)
    # Findings in mock files at a line or with a code that no label asks for.
    unexpected: list[Finding] = field(default_factory=list)
    # Findings in honest files: every one is a false positive.
    honest: list[Finding] = field(default_factory=list)
    mock_files: int = 0
    honest_files: int = 0

    @property
    def missed(self) -> set[Label]:
        return self.expected - self.found

    @property
    def recall(self) -> float:
        return len(self.expected & self.found) / len(self.expected) if self.expected else 1.0

    @property
    def false_positives(self) -> int:
        return len(self.unexpected) + len(self.honest)


def expectations(path: Path) -> set[Label]:
    """The ``# expect:`` labels of one corpus file."""
    labels: set[Label] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _EXPECT.search(line)
        if match:
            for code in match.group("codes").split(","):
                labels.add((path.as_posix(), number, code.strip()))
    return labels


def measure(corpus: Path) -> Score:
    """Run the checker over a corpus and compare with its labels."""
    score = Score()
    mock = sorted((corpus / "mock").glob("*.py"))
    honest = sorted((corpus / "honest").glob("*.py"))
    score.mock_files, score.honest_files = len(mock), len(honest)
    for path in mock:
        labels = expectations(path)
        score.expected |= labels
        for finding in lint_paths([path]).findings:
            label = (path.as_posix(), finding.line, finding.code)
            if label in labels:
                score.found.add(label)
            else:
                score.unexpected.append(finding)
    for path in honest:
        score.honest.extend(lint_paths([path]).findings)
    return score


def report(score: Score) -> str:
    """The score as the lines ``measure`` prints."""
    hit = len(score.expected & score.found)
    lines = [
        f"mock files: {score.mock_files}, expected findings: {len(score.expected)}, "
        f"found: {hit}, recall: {score.recall:.1%}",
        f"honest files: {score.honest_files}, findings in honest files: {len(score.honest)}",
        f"unexpected findings in mock files: {len(score.unexpected)}",
        f"false positives: {score.false_positives}",
    ]
    lines += [f"missed: {file}:{line}: {code}" for file, line, code in sorted(score.missed)]
    lines += [f"false positive: {finding}" for finding in [*score.unexpected, *score.honest]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        sys.stderr.write("usage: python -m sincere_lint.measure CORPUS_DIR\n")
        return 2
    score = measure(Path(argv[0]))
    sys.stdout.write(report(score) + "\n")
    return 0 if not score.missed and not score.false_positives else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
