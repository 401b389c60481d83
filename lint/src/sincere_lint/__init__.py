"""``sincere-lint``: a static checker for failure paths that fabricate answers.

It finds ``except`` handlers (and the code reached only through them) that return canned
text, literal answers, the output of fallback or mock generators, invented numbers, or
hard-coded estimates. See ``docs/lint.md`` and ``sincere-lint --explain CODE``.
"""

__version__ = "0.1.0"

from sincere_lint.rules import RULES, Rule
from sincere_lint.runner import Finding, LintResult, lint_paths, lint_source

__all__ = ["RULES", "Finding", "LintResult", "Rule", "__version__", "lint_paths", "lint_source"]
