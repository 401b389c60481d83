"""``sincere-lint``: the corpus of mock patterns and honest handlers, and the command as run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sincere_lint import lint_paths, lint_source
from sincere_lint.measure import expectations, measure

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "lint" / "corpus"
MOCK = sorted((CORPUS / "mock").glob("*.py"))
HONEST = sorted((CORPUS / "honest").glob("*.py"))
TEXT_LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+): (?P<code>SIN\d{3}) (?P<msg>.+)$")

CANNED = """\
def answer(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return "Sorry, something went wrong while answering your question."
"""


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sincere_lint", "--no-cache", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# The corpus


@pytest.mark.parametrize("path", MOCK, ids=lambda p: p.name)
def test_every_mock_pattern_in_the_corpus_is_found_at_its_marked_line(path: Path) -> None:
    expected = {(line, code) for _, line, code in expectations(path)}
    found = {(f.line, f.code) for f in lint_paths([path]).findings}
    assert expected, f"{path.name} marks no expected finding"
    assert found == expected


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.name)
def test_honest_handlers_in_the_corpus_are_clean(path: Path) -> None:
    assert [str(f) for f in lint_paths([path]).findings] == []


def test_the_three_seed_patterns_are_found() -> None:
    codes = {
        path.stem: {f.code for f in lint_paths([path]).findings}
        for path in MOCK
        if path.stem.startswith("seed_")
    }
    assert "SIN002" in codes["seed_model_cascade"]  # "I apologize, but I encountered an error"
    assert "SIN001" in codes["seed_execution_agent"]  # "Processing completed with fallback..."
    assert "SIN003" in codes["seed_data_agent"]  # self._generate_fallback_data(metrics, 100)
    assert "SIN005" in codes["seed_model_cascade"]  # quality_score 0.7, recovery time 30


def test_corpus_recall_is_complete_with_no_false_positives() -> None:
    score = measure(CORPUS)
    assert score.mock_files >= 8
    assert score.honest_files >= 6
    assert len(score.expected) >= 60
    assert score.missed == set()
    assert score.recall == 1.0
    assert [str(f) for f in [*score.unexpected, *score.honest]] == []


def test_the_measure_script_prints_recall_and_false_positives() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sincere_lint.measure", str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recall: 100.0%" in result.stdout
    assert "false positives: 0" in result.stdout


def test_sincere_itself_is_clean() -> None:
    result = _lint("src", "lint/src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


# Output formats


def test_text_output_is_path_line_column_code_message() -> None:
    result = _lint("tests/lint/corpus/mock/seed_execution_agent.py")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first = TEXT_LINE.match(lines[0])
    assert first is not None
    assert first["path"] == "tests/lint/corpus/mock/seed_execution_agent.py"
    assert (first["line"], first["col"], first["code"]) == ("16", "20", "SIN001")
    assert "Processing completed with fallback response" in first["msg"]
    assert "2 findings in 1 file" in result.stderr


def test_json_output_is_an_array_of_findings_with_one_based_columns() -> None:
    result = _lint("--format", "json", "tests/lint/corpus/mock/seed_data_agent.py")
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    assert [set(f) for f in findings] == [{"path", "line", "column", "code", "message"}] * 2
    first = findings[0]
    source = (ROOT / first["path"]).read_text().splitlines()[first["line"] - 1]
    assert source.index("self._generate_fallback_data") + 1 == first["column"]
    assert (first["code"], first["line"]) == ("SIN003", 14)


def test_json_output_of_clean_code_is_an_empty_array() -> None:
    result = _lint("-f", "json", "tests/lint/corpus/honest")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_sarif_output_is_sarif_2_1_0_with_rules_and_relative_locations() -> None:
    result = _lint("--format", "sarif", "tests/lint/corpus/mock/seed_model_cascade.py")
    assert result.returncode == 1
    log: dict[str, Any] = json.loads(result.stdout)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "sincere-lint"
    assert driver["informationUri"].startswith("https://")
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert {"SIN001", "SIN002", "SIN003", "SIN004", "SIN005"} <= set(rules)
    for rule in rules.values():
        assert rule["shortDescription"]["text"]
        assert rule["fullDescription"]["text"]
        assert rule["help"]["text"]
    results = log["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["SIN002", "SIN005", "SIN005"]
    first = results[0]
    assert first["level"] == "error"
    assert "I apologize" not in first["message"]["text"]  # the message names the field
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "tests/lint/corpus/mock/seed_model_cascade.py"
    assert location["region"] == {"startLine": 17, "startColumn": 29}


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    line = '        return {"résumé": "ok", "answer": "Voilà, the café answer is always yes."}'
    source = CANNED.replace(CANNED.splitlines()[-1], line)
    findings = lint_source(source)
    assert [(f.line, f.code) for f in findings] == [(5, "SIN002")]
    assert findings[0].column == line.index('"Voilà') + 1


# Exit codes and usage errors


def test_exit_0_when_clean_and_1_when_something_is_found(tmp_path: Path) -> None:
    clean = _write(tmp_path, "clean.py", "def f():\n    return 1\n")
    assert _lint(str(clean)).returncode == 0
    assert _lint(str(_write(tmp_path, "canned.py", CANNED))).returncode == 1


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["src", "--select", "SIN999"], "unknown rule code 'SIN999'"),
        (["src", "--ignore", "E501"], "unknown rule code 'E501'"),
        (["does/not/exist.py"], "no such file or directory: does/not/exist.py"),
        (["src", "--format", "xml"], "unknown format 'xml'"),
        ([], "no path given"),
        (["--explain", "SIN042"], "unknown rule code 'SIN042'"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], complaint: str) -> None:
    result = _lint(*args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert result.stdout == ""


def test_explain_prints_the_rule_with_a_bad_and_a_good_example() -> None:
    result = _lint("--explain", "sin003")
    assert result.returncode == 0
    assert result.stdout.startswith("SIN003 (fallback-call): ")
    assert "Bad:" in result.stdout
    assert "Good" in result.stdout
    assert "_generate_fallback_data" in result.stdout


def test_a_file_that_does_not_parse_is_reported_not_skipped(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken.py", "def f(:\n    pass\n")
    result = _lint("-f", "json", str(broken))
    assert result.returncode == 1
    assert [f["code"] for f in json.loads(result.stdout)] == ["SIN000"]


# Silencing and configuration


def test_noqa_with_the_code_silences_that_line_only() -> None:
    silenced = CANNED.replace('question."', 'question."  # noqa: SIN001')
    other_code = CANNED.replace('question."', 'question."  # noqa: SIN002, BLE001')
    bare = CANNED.replace('question."', 'question."  # noqa')
    assert [f.code for f in lint_source(CANNED)] == ["SIN001"]
    assert lint_source(silenced) == []
    assert [f.code for f in lint_source(other_code)] == ["SIN001"]
    assert lint_source(bare) == []


def test_select_and_ignore_on_the_command_line(tmp_path: Path) -> None:
    path = str(_write(tmp_path, "canned.py", CANNED))
    assert _lint(path, "--select", "SIN002,SIN003").returncode == 0
    assert _lint(path, "--select", "SIN").returncode == 1
    assert _lint(path, "--ignore", "SIN001").returncode == 0


def test_pyproject_table_sets_select_ignore_and_extra_names(tmp_path: Path) -> None:
    project = tmp_path / "project"
    _write(
        project,
        "pyproject.toml",
        """
        [tool.sincere.lint]
        ignore = ["SIN001"]
        extra-fallback-names = ["offline"]
        extra-answer-fields = ["verdict"]
        extra-metric-fields = ["queue_depth"]
        extra-estimate-fields = ["wait_hint"]
        """,
    )
    _write(project, "pkg/canned.py", CANNED)
    extra = _write(
        project,
        "pkg/extra.py",
        """
        class Reviewer:
            def review(self, change):
                try:
                    return self.model.review(change)
                except Exception:
                    return self._offline_review(change)

            def judge(self, change):
                try:
                    return self.model.judge(change)
                except Exception:
                    return {"verdict": "Looks great, ship it right away."}

            def queue(self):
                try:
                    return self.model.queue()
                except Exception:
                    return {"queue_depth": 12, "queue_name": "main"}

            def busy(self):
                raise Busy("try later", wait_hint=45)
        """,
    )
    result = _lint("-f", "json", "pkg", cwd=project)
    found = sorted((f["path"], f["line"], f["code"]) for f in json.loads(result.stdout))
    assert found == [
        ("pkg/extra.py", 7, "SIN003"),
        ("pkg/extra.py", 13, "SIN002"),
        ("pkg/extra.py", 19, "SIN004"),
        ("pkg/extra.py", 22, "SIN005"),
    ]
    # Outside the project none of these names is known.
    bare = _write(tmp_path, "bare/extra.py", extra.read_text())
    assert _lint(str(bare)).returncode == 0
    # The command line's --select replaces the table's selection; --ignore adds to it.
    assert _lint("pkg", "--select", "SIN001", cwd=project).returncode == 0
    assert _lint("pkg", "--ignore", "SIN002,SIN003,SIN004,SIN005", cwd=project).returncode == 0


def test_the_nearest_pyproject_with_a_table_applies(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", '[tool.sincere.lint]\nselect = ["SIN003"]\n')
    _write(tmp_path, "inner/pyproject.toml", "[project]\nname = 'inner'\n")  # no table
    _write(tmp_path, "inner/deeper/pyproject.toml", "[tool.sincere.lint]\nignore = []\n")
    _write(tmp_path, "inner/canned.py", CANNED)
    _write(tmp_path, "inner/deeper/canned.py", CANNED)
    result = _lint("-f", "json", ".", cwd=tmp_path)
    assert [f["path"] for f in json.loads(result.stdout)] == ["inner/deeper/canned.py"]


def test_a_broken_table_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", '[tool.sincere.lint]\nselectt = ["SIN001"]\n')
    _write(tmp_path, "canned.py", CANNED)
    result = _lint("canned.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "pyproject.toml: unknown key(s) selectt" in result.stderr
