"""The Qwen3-4B path, run end to end on one machine with a model of Qwen3-4B's exact shape (random weights).

Builds a fresh ``Qwen3Config`` of Qwen3-4B's shape (hidden 2560, 32 heads, 8 KV heads, head_dim 128,
intermediate 9728, vocabulary 151936, tied embeddings; ``--layers`` of them, 36 in Qwen3-4B) with the
project's tiny tokenizer, then measures, side by side in one run:
- rubric judgements/s of a naive transformers ``generate`` loop (one window at a time) and of the same
  windows through the gateway (``rubric-verifier serve``: vLLM + the reward gateway), with vLLM's
  prefix-cache hit rate; every gateway answer is checked against the judging contract;
- stage 1 SFT (tokens/s, s/step) and one stage 2 GRPO step, through the same ``rubric-verifier train``
  commands and the ``recipes/qwen3-4b.yaml`` settings. On a GPU the recipe runs as it is (bf16, vLLM
  colocate generation); without CUDA the changes in ``CPU_CHANGES`` apply and are written to the results.

    python bench/gpu.py                                          # one GPU: the full 36-layer shape
    flock /tmp/rv-heavy.lock python bench/gpu.py --layers 1      # a CPU: 1 layer, CPU changes
    python bench/gpu.py --shape tiny --layers 1 --skip-serve     # smallest setting (the test's)

On CPU the engine runs from ``RV_VLLM_PYTHON`` (the vLLM CPU build). Writes one row per (device, shape,
layers) to bench/results/qwen3_4b_shape.json, replacing an earlier row of the same key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "qwen3-4b.yaml"
QWEN3_4B = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TINY = QWEN3_4B | {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4}
TINY |= {"num_key_value_heads": 2, "head_dim": 32, "vocab_size": 3000}
SHAPES = {"qwen3-4b": QWEN3_4B, "tiny": TINY}

# Without CUDA: what changes from the recipe, and why (flag -> (value, reason)); written to the results
CPU_CHANGES: dict[str, dict[str, tuple[Any, str]]] = {
    "sft": {
        "bf16": (False, "no native bf16 on this CPU: autocast would fall back to a naive GEMM"),
        "dtype": ("float32", "same reason (bf16 matmuls are slow without avx512_bf16)"),
        "per_device_train_batch_size": (1, "memory: batch 1, the recipe's gradient accumulation kept"),
        "completion_only_logits": (True, "TRL's fused LM head needs Triton/CUDA; this is its CPU equivalent"),
        "max_eval_windows": (0, "time: greedy eval of 256 prompts x 256 tokens; a random model's is noise"),
    },
    "rl": {
        "bf16": (False, "no native bf16 on this CPU"),
        "dtype": ("float32", "bf16 matmuls are slow without avx512_bf16"),
        "use_vllm": (False, "vLLM colocate needs CUDA: transformers generation instead"),
        "per_device_train_batch_size": (1, "memory: batch 1 with gradient accumulation"),
        "gradient_accumulation_steps": (2, "one group of 2 completions per optimizer step"),
        "num_generations": (2, "memory: 2 generations instead of 16"),
        "max_completion_length": (64, "time: a random model never emits EOS, so each runs the full length"),
    },
}
# Everywhere: data, output and budget (one step of each stage, small data) are the bench's
GPU_SFT_STEPS, CPU_SFT_STEPS = 8, 1


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_model(shape: str, layers: int, out: Path, device: str) -> dict[str, Any]:
    """A fresh Qwen3Config of the shape (never a hub checkpoint), random weights, the tiny tokenizer."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from verifier.hardware import cpu_has_native_bf16
    from verifier.models import build_tiny_model, default_models_dir

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(default_models_dir() / "tiny"))
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen3Config(
        **SHAPES[shape],
        num_hidden_layers=layers,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    dtype = torch.bfloat16 if device == "cuda" or cpu_has_native_bf16() else torch.float32
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # initialise in the saved dtype: no float32 copy of 4B weights
        try:
            with torch.device(device):
                model = Qwen3ForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
    with torch.device("meta"):
        params = sum(p.numel() for p in Qwen3ForCausalLM(config).parameters())
    return {"hidden_size": config.hidden_size, "layers": layers, "params": params, "dtype": str(dtype)}


def judging_items(limit: int, window: int) -> list[dict[str, Any]]:
    from rubric_pipeline.demo_world import generate_world, make_responses

    examples = make_responses(generate_world(seed=0), seed=0)[:limit]
    return [
        {"question": e.question, "response": e.response, "rubrics": [r.text for r in e.rubrics[:window]]}
        for e in examples
    ]


def naive_judging(model_dir: Path, items: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """Judgements/s of the loop a user writes first: one window, one ``generate`` call, at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifier.judge.judges import default_max_tokens
    from verifier.judge.prompt import ParseError, parse_labels, render_messages

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    judged = parsed = 0
    started = time.perf_counter()
    for item in items:
        messages = render_messages(item["question"], item["response"], item["rubrics"])
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to(device)
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=default_max_tokens(len(item["rubrics"])), do_sample=False
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        judged += len(item["rubrics"])
        try:
            parse_labels(text, len(item["rubrics"]))
            parsed += 1
        except ParseError:
            pass
    seconds = time.perf_counter() - started
    del model
    return {"judgements_per_s": judged / seconds, "seconds": seconds, "items": len(items), "parsed": parsed}


async def _post_all(url: str, items: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    import httpx

    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(item: dict[str, Any]) -> dict[str, Any]:
            async with limit:
                response = await client.post(f"{url}/v1/judge", json={"items": [item]})
                response.raise_for_status()
                return response.json()["results"][0]

        return await asyncio.gather(*(one(item) for item in items))


def gateway_judging(model_dir: Path, items: list[dict[str, Any]], work: Path, concurrency: int) -> dict:
    """Judgements/s through ``rubric-verifier serve`` (vLLM + gateway), prefix-cache hit rate, contract."""

    from bench.prefix_cache import cache_counters
    from rubric_pipeline.core.records import LABELS
    from verifier.serve.engine import free_port
    from verifier.serve.launch import serve_command, wait_healthy

    port, engine_port = free_port(), free_port()
    log = (work / "serve.log").open("w")
    command = serve_command("--model", str(model_dir), "--port", str(port))
    command += ["--engine-port", str(engine_port), "--max-model-len", "4096"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, engine = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{engine_port}"
    try:
        wait_healthy(url, server, 900, work / "serve.log", interval_s=2)
        asyncio.run(_post_all(url, items[:1], 1))  # warm-up (compilation, first allocation)
        queries0, hits0 = cache_counters(engine)
        started = time.perf_counter()
        results = asyncio.run(_post_all(url, items, concurrency))
        seconds = time.perf_counter() - started
        queries1, hits1 = cache_counters(engine)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()
    valid = [
        r["error"] is None and len(r["labels"]) == len(item["rubrics"]) and set(r["labels"]) <= set(LABELS)
        for r, item in zip(results, items, strict=True)
    ]
    return {
        "judgements_per_s": sum(len(item["rubrics"]) for item in items) / seconds,
        "seconds": seconds,
        "items": len(items),
        "concurrency": concurrency,
        "prefix_cache_hit_rate": (hits1 - hits0) / (queries1 - queries0) if queries1 > queries0 else None,
        "contract_ok": sum(valid),
        "example_labels": results[0]["labels"],
    }


def train(stage: str, flags: dict[str, Any], work: Path) -> dict[str, Any]:
    """One ``rubric-verifier train STAGE`` run (recipe + ``flags``): its time, tokens and peak RSS."""
    command = [sys.executable, "-m", "verifier.cli", "train", stage, "--recipe", os.path.relpath(RECIPE)]
    for key, value in flags.items():
        command += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with (work / f"{stage}.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = (work / f"{stage}.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"train {stage} failed:\n" + "\n".join(tail))
    history = json.loads((Path(flags["output_dir"]) / "log_history.json").read_text())
    runtime = next(entry for entry in history if "train_runtime" in entry)
    steps = max(entry.get("step", 0) for entry in history)
    tokens = [entry["num_tokens"] for entry in history if "num_tokens" in entry]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    row = {
        "steps": steps,
        "step_s": runtime["train_runtime"] / max(steps, 1),
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "command": " ".join(["rubric-verifier", *command[3:]]),
    }
    if tokens:
        row["tokens_per_s"] = tokens[-1] / runtime["train_runtime"]
    if rewards:
        row["rewards"] = rewards
    return row


def stage_flags(stage: str, device: str, model: str, data: Path, out: Path, steps: int) -> dict[str, Any]:
    flags: dict[str, Any] = {"model_name_or_path": model, "data": str(data), "output_dir": str(out)}
    flags |= {"max_steps": steps, "save_strategy": "no", "logging_steps": 1}
    if device == "cpu":
        flags |= {key: value for key, (value, _why) in CPU_CHANGES[stage].items()}
        flags["num_threads"] = os.cpu_count() or 1
    batch = flags.get("per_device_train_batch_size", 4 if stage == "sft" else 16)
    accumulation = flags.get("gradient_accumulation_steps", 4 if stage == "sft" else 1)
    flags["max_train_windows"] = steps * batch * accumulation  # one pass: no repeated windows
    return flags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-4b")
    parser.add_argument("--layers", type=int, default=36, help="decoder layers (Qwen3-4B: 36)")
    parser.add_argument("--work-dir", default="runs/gpu-bench")
    parser.add_argument("--judge-items", type=int, default=None, help="default: 256 on GPU, 4 on CPU")
    parser.add_argument("--naive-items", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--skip-serve", action="store_true", help="no vLLM / gateway (the CPU test)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "qwen3_4b_shape.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))

    device = device_kind()
    gpu = device == "cuda"
    work = Path(args.work_dir) / f"{args.shape}-{args.layers}l-{device}"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    row: dict[str, Any] = {"device": device, "shape": args.shape}
    row |= build_model(args.shape, args.layers, model_dir, device)
    row["cpu_flags"] = sorted(set(re.findall(r"avx512_bf16|avx512f|avx2", Path("/proc/cpuinfo").read_text())))
    if gpu:
        import torch

        row["gpu"] = torch.cuda.get_device_name(0)

    from rubric_pipeline.core.records import write_jsonl
    from rubric_pipeline.demo_world import generate_world, make_responses

    data = work / "labelled.jsonl"
    write_jsonl(data, (e.to_dict() for e in make_responses(generate_world(seed=0), seed=0)))

    sft_steps = args.sft_steps or (GPU_SFT_STEPS if gpu else CPU_SFT_STEPS)
    sft = train("sft", stage_flags("sft", device, str(model_dir), data, work / "sft", sft_steps), work)
    rl_flags = stage_flags("rl", device, str(work / "sft" / "merged"), data, work / "rl", 1)
    rl = train("rl", rl_flags, work)
    row |= {
        "sft_step_s": sft["step_s"],
        "sft_tokens_per_s": sft.get("tokens_per_s"),
        "grpo_step_s": rl["step_s"],
    }
    row |= {"peak_rss_gib": max(sft["peak_rss_gib"], rl["peak_rss_gib"]), "sft": sft, "grpo": rl}
    row["changes"] = (
        {}
        if gpu
        else {stage: {k: f"{v} ({why})" for k, (v, why) in c.items()} for stage, c in CPU_CHANGES.items()}
    )
    items = judging_items(args.judge_items or (256 if gpu else 4), window=10)
    naive = naive_judging(work / "rl" / "merged", items[: args.naive_items or (32 if gpu else 2)], device)
    row["judging"] = {"naive_transformers": naive}
    if args.skip_serve:
        row["judging"]["gateway"] = "skipped (--skip-serve)"
    else:
        served = gateway_judging(work / "rl" / "merged", items, work, args.concurrency)
        served["speedup_vs_naive"] = served["judgements_per_s"] / naive["judgements_per_s"]
        row["judging"]["gateway"] = served
    row["command"] = " ".join(["python", "bench/gpu.py", *sys.argv[1:]])

    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    key = (row["device"], row["shape"], row["layers"])
    rows = [r for r in rows if (r["device"], r["shape"], r["layers"]) != key] + [row]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(json.dumps({k: row[k] for k in ("hidden_size", "layers", "params", "sft_step_s", "grpo_step_s")}))
    print(f"peak RSS {row['peak_rss_gib']:.2f} GiB; judging {json.dumps(row['judging'], default=str)}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
