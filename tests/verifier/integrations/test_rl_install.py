"""The light install: what RL users install (the base package: the adapters and httpx) resolves inside
verl 0.9.1's and OpenRLHF 0.11.2's pinned environments without changing a single installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def wheel(repo_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, str(repo_root), "-w", str(out)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("rubric_verifier-*.whl")
    return str(built)


@pytest.mark.parametrize("name", ["verl", "openrlhf"])
def test_the_adapters_install_beside_the_framework_pins(framework, wheel, name, tmp_path):
    python = framework(name)
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout is not installed there
    subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "-q", "--report", str(report), wheel],
        check=True, capture_output=True, timeout=300, env=env,
    )  # fmt: skip
    would_install = [entry["metadata"]["name"] for entry in json.loads(report.read_text())["install"]]
    assert would_install == ["rubric-verifier"], would_install  # nothing of the framework's env moves
