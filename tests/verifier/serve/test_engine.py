from __future__ import annotations

import httpx
import pytest

from verifier.serve.engine import EngineConfig, EngineError, VLLMEngine


@pytest.mark.vllm
def test_engine_serves_the_model(vllm_server):
    models = httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [vllm_server.model_name]
    assert vllm_server.is_alive()
    command = vllm_server.command()
    assert "--enable-prefix-caching" in command and "--structured-outputs-config" in command


@pytest.mark.vllm
def test_engine_that_dies_raises_with_log_tail(tmp_path):
    missing = tmp_path / "no-such-model"
    config = EngineConfig(model=str(missing), ready_timeout_s=120, log_path=str(tmp_path / "e.log"))
    engine = VLLMEngine(config)
    with pytest.raises(EngineError, match=r"exited with code .* before ready(.|\n)*last \d+ lines"):
        engine.start()
    assert not engine.is_alive()


def test_engine_requires_a_model():
    with pytest.raises(ValueError, match="model"):
        VLLMEngine(EngineConfig()).start()


def test_relative_model_folder_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    command = VLLMEngine(EngineConfig(model="m")).command()
    assert command[command.index("--model") + 1] == str(tmp_path / "m")
    assert command[command.index("--served-model-name") + 1] == "m"


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("flags\t\t: fpu sse2 avx avx2 fma", False),  # this project's CPU: bf16 matmuls are emulated
        ("flags\t\t: fpu avx2 avx512f avx512_bf16", True),
        ("Features\t: fp asimd bf16 i8mm", True),  # Arm
    ],
)
def test_native_bf16_is_read_from_cpu_flags(tmp_path, flags, native):
    from verifier.hardware import cpu_has_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_auto_dtype_is_float32_on_a_cpu_without_bf16(monkeypatch):
    import verifier.serve.engine as engine_module

    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: False)
    command = VLLMEngine(EngineConfig(model="m", device="cpu")).command()
    assert command[command.index("--dtype") + 1] == "float32"
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: True)
    assert VLLMEngine(EngineConfig(model="m", device="cpu")).dtype == "bfloat16"
    assert VLLMEngine(EngineConfig(model="m", device="cpu", dtype="bfloat16")).dtype == "bfloat16"
    assert VLLMEngine(EngineConfig(model="m", device="cuda")).dtype == "bfloat16"


def test_watchdog_kills_the_group_when_its_owner_is_killed(tmp_path):
    """The reaper alone, on a real process group of plain processes (fast, no vLLM): the owner starts a
    group whose grandchildren ignore nothing, is SIGKILLed, and the group goes within seconds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from verifier.serve.engine import WATCHDOG, group_alive

    owner_code = (
        "import os, subprocess, sys, time\n"
        "group = subprocess.Popen(['sh', '-c', 'sleep 300 & sleep 300 & wait'], start_new_session=True)\n"
        f"subprocess.Popen([sys.executable, '-c', {WATCHDOG!r}, str(os.getpid()), str(group.pid)],"
        " start_new_session=True)\n"
        "print(group.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    pgid = int(owner.stdout.readline())
    try:
        time.sleep(1.0)
        assert group_alive(pgid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 15
        while group_alive(pgid):
            assert time.monotonic() < deadline, "the watchdog left the group running"
            time.sleep(0.1)
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
