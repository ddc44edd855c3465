from __future__ import annotations

import os
import subprocess
import sys

import pytest

from verifier.cli import COMMANDS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"rubric-verifier {command}" in result.stdout


def test_engine_that_cannot_start_is_one_line_error(tmp_path):
    """An engine process that exits at once (here the vLLM interpreter is `/bin/false`): one error line."""
    (tmp_path / "config.json").write_text("{}")
    env = {**os.environ, "RV_VLLM_PYTHON": "/bin/false"}
    result = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "serve", "--model", str(tmp_path), "--port", "0"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "rubric-verifier serve: error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_input_file_is_one_line_error(tmp_path):
    """A missing file, a folder where a file is expected, a bad record: one line, exit 2, no traceback."""
    missing = tmp_path / "missing.jsonl"
    result = run_cli("eval", "--judge", "lexical", "--data", str(missing))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rubric-verifier eval: error: {missing}: no such file"), line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "q1", "question": "?", "rubrics": [{"text": "a", "weight": "heavy"}]}\n')
    responses = tmp_path / "responses.jsonl"
    responses.write_text('{"qid": "q1", "response_id": "a", "response": "An answer."}\n')
    args = ["--judge", "lexical", "--responses", str(responses), "--rubrics", str(bad)]
    result = run_cli("label", *args, "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    expected = (
        f"rubric-verifier label: error: {bad}: line 1, field 'rubrics[0].weight': expected number, got str"
    )
    assert line == expected, line


# A stand-in subcommand (a test double): the toolkit has no known KeyError bug to provoke for real, and the
# point is what the CLI does with an exception that is not a toolkit error.
BUGGY_COMMAND = """
import sys, types
import verifier.cli as cli
module = types.ModuleType("rv_buggy_command")
module.add_arguments = lambda parser: None
def run(args):
    return {}["missing"]  # a bug inside a command: KeyError
module.run = run
sys.modules[module.__name__] = module
cli.COMMANDS["buggy"] = (module.__name__, "raises a KeyError")
sys.exit(cli.main(["buggy"]))
"""


def test_internal_bug_keeps_its_traceback():
    result = subprocess.run(
        [sys.executable, "-c", BUGGY_COMMAND], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "KeyError: 'missing'"
    assert "rubric-verifier buggy: error:" not in result.stderr


def test_toolkit_errors_share_one_root():
    from rubric_pipeline.core.errors import ConfigError, RecordError, RubricVerifierError
    from rubric_pipeline.core.llm import LLMError
    from rubric_pipeline.retrieval.web import WebSearchError
    from verifier.models import MissingPackageError
    from verifier.serve.engine import EngineError

    for error in (ConfigError, RecordError, LLMError, WebSearchError, EngineError, MissingPackageError):
        assert issubclass(error, RubricVerifierError), error
    assert issubclass(ConfigError, ValueError) and issubclass(RecordError, ValueError)  # as before
