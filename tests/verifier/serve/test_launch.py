"""Waiting for a gateway child process: ready, exited first, or never healthy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from verifier.serve.engine import free_port
from verifier.serve.launch import GatewayNotReady, serve_command, wait_healthy


def test_serve_command_runs_this_interpreter() -> None:
    assert serve_command("--port", "1") == [sys.executable, "-m", "verifier.cli", "serve", "--port", "1"]


def test_returns_once_health_answers_200(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")  # a static server whose /health is a file: 200
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout_s=30, interval_s=0.1)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_a_process_that_exits_first_fails_with_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('no engine here'); sys.exit(3)"], stdout=log, stderr=log
        )
    with pytest.raises(GatewayNotReady, match=r"exited with 3(.|\n)*no engine here"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", process, timeout_s=30, log_path=log_path)


def test_a_process_that_never_answers_times_out() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(GatewayNotReady, match="not healthy after 1 s"):
            wait_healthy(f"http://127.0.0.1:{free_port()}", process, timeout_s=1, interval_s=0.1)
    finally:
        process.kill()
        process.wait()
