"""``rubric-verifier serve`` as a child process, for the demo, benchmarks and tests that drive a real gateway
over HTTP: the command line, and a wait until ``/health`` answers 200 that fails with the log's tail when the
process exits first or the time runs out."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from rubric_pipeline.core.errors import RubricVerifierError


class GatewayNotReady(RubricVerifierError, RuntimeError):
    """The gateway exited, or did not answer ``/health`` with 200 in time (the message holds its log tail)."""


def serve_command(*flags: str) -> list[str]:
    """``rubric-verifier serve FLAGS`` run by this interpreter."""
    return [sys.executable, "-m", "verifier.cli", "serve", *flags]


def wait_healthy(
    url: str,
    process: subprocess.Popen,
    timeout_s: float = 300.0,
    log_path: Path | None = None,
    interval_s: float = 0.5,
) -> None:
    """Return once ``GET {url}/health`` answers 200; raise :class:`GatewayNotReady` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            problem = f"`rubric-verifier serve` exited with {process.returncode}"
            break
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            problem = f"gateway {url} not healthy after {timeout_s:.0f} s"
            break
        time.sleep(interval_s)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.is_file() else ""
    raise GatewayNotReady(f"{problem}" + (f"; log {log_path}:\n{tail}" if log_path else ""))
