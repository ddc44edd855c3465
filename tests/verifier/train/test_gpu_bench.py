"""bench/gpu.py at its smallest setting on CPU: the same script a one-GPU user runs, with the vLLM and
gateway part skipped explicitly (it needs the engine; `rubric-verifier serve` has its own tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_bench_smallest_setting_runs_both_stages_and_naive_judging(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "rows.json"
    command = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--shape", "tiny", "--layers", "1"]
    command += ["--skip-serve", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert (row["device"], row["shape"], row["layers"], row["hidden_size"]) == ("cpu", "tiny", 1, 128)
    assert row["params"] > 0 and row["peak_rss_gib"] > 0
    assert row["sft"]["steps"] == 1 and row["grpo"]["steps"] == 1
    assert row["sft_step_s"] > 0 and row["grpo_step_s"] > 0 and row["sft_tokens_per_s"] > 0
    assert len(row["grpo"]["rewards"]) == 1 and 0.0 <= row["grpo"]["rewards"][0] <= 1.0
    # without CUDA the recipe's GPU-only settings are changed, and each change is written down
    assert (
        row["changes"]["rl"]["use_vllm"].startswith("False") and "--use_vllm false" in row["grpo"]["command"]
    )
    assert (
        "--recipe recipes/qwen3-4b.yaml" in row["sft"]["command"] or "qwen3-4b.yaml" in row["sft"]["command"]
    )
    naive = row["judging"]["naive_transformers"]
    assert naive["items"] == 2 and naive["judgements_per_s"] > 0
    assert row["judging"]["gateway"] == "skipped (--skip-serve)"
    assert (tmp_path / "work" / "tiny-1l-cpu" / "rl" / "merged" / "model.safetensors").is_file()
