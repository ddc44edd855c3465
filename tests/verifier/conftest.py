"""Fixtures of tests/verifier: bad labelled-input files, shared by the CLI tests of every command that reads
labelled examples (augment, eval, train sft).

Each case is written to disk and run through the real CLI; the command must exit 2 with exactly one
``rubric-verifier CMD: error: FILE...`` line naming the line and the field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

GOOD = {
    "qid": "q1",
    "question": "When did the bridge open?",
    "response": "The bridge opened in 1932.",
    "response_id": "q1:a",
    "rubrics": [{"rubric_id": "r0", "text": "The bridge opened in 1932"}, "Tolls pay for upkeep"],
    "labels": ["support", "not_support"],
    "label_source": "human:test",
}


def _lines(*records: dict) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def _without(name: str) -> dict:
    return {key: value for key, value in GOOD.items() if key != name}


# name -> (file bytes, fragments the error line must contain)
LABELLED_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "missing_field": (_lines(_without("response")), ("line 1", "field 'response'", "missing")),
    "malformed_json": (_lines(GOOD, GOOD) + b'{"qid": \n', ("line 3", "malformed JSON")),
    "labels_not_a_list": (_lines(GOOD, GOOD | {"labels": "support"}), ("line 2", "field 'labels'", "list")),
    "rubrics_a_string": (_lines(GOOD | {"rubrics": "abc"}), ("line 1", "field 'rubrics'", "got str")),
    "rubric_without_text": (_lines(GOOD | {"rubrics": [{"rubric_id": "r0"}, "x"]}), ("'rubrics[0].text'",)),
    "length_mismatch": (_lines(GOOD | {"labels": ["support"]}), ("field 'labels'", "1 labels for 2 rubrics")),
    "unknown_label": (
        _lines(GOOD | {"labels": ["support", "supported"]}),
        ("line 1", "field 'labels[1]'", "unknown label 'supported'"),
    ),
    "empty_file": (b"", ("empty",)),
    "not_utf8": (_lines(GOOD) + '{"qid": "caf\xe9"}\n'.encode("latin-1"), ("line 2", "not UTF-8")),
}


@pytest.fixture(params=sorted(LABELLED_CASES))
def bad_labelled_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """Each bad case in turn: ``(path, fragments its error line must contain)``."""
    content, fragments = LABELLED_CASES[request.param]
    path = tmp_path / f"{request.param}.jsonl"
    path.write_bytes(content)
    return path, fragments


@pytest.fixture
def not_a_datasets_folder(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    folder = tmp_path / "not_a_dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    return folder, ("not a `datasets` folder", "expected")


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    return assert_one_line_error


def assert_one_line_error(command: str, args: list[str], path: Path, fragments: tuple[str, ...]) -> str:
    """Run ``rubric-verifier --log-level ERROR COMMAND ARGS`` and check its single error line."""
    result = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--log-level", "ERROR", *command.split(), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert line.startswith(f"rubric-verifier {command.split()[0]}: error: {path}"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
