"""Fixtures of the integration tests: where the RL frameworks' own environments are, and how the tests
run code in them.

``make test`` builds ``.venv-verl`` and ``.venv-openrlhf`` from ``env/verl.lock`` / ``env/openrlhf.lock``
and sets ``RV_REQUIRE_FRAMEWORKS=1``, so a missing environment fails there; a bare ``pytest`` run without
them skips these tests with the command that builds them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DRIVERS = Path(__file__).resolve().parent / "drivers"


def framework_python(name: str) -> Path:
    python = Path(os.environ.get(f"RV_{name.upper()}_PYTHON", ROOT / f".venv-{name}" / "bin" / "python"))
    if not python.exists():
        message = f"no {name} environment at {python}: run `make venv-{name}`"
        if os.environ.get("RV_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def _run_driver(name: str, driver: str, *args: str, timeout: float = 600) -> dict:
    """Run ``drivers/<driver>`` in the framework's environment (this checkout first on the path) and
    return the JSON object it prints."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(
        [str(framework_python(name)), str(DRIVERS / driver), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def run_driver():
    """``run_driver(framework, driver_file, *args)`` -> the JSON object the driver prints."""
    return _run_driver


@pytest.fixture(scope="session")
def framework() -> object:
    """``framework(name)`` -> that framework environment's python (skips or fails when missing)."""
    return framework_python


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
