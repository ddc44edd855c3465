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
