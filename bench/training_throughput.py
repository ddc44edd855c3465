"""Stage 1 training throughput on this CPU: TRL's default loss path vs logits only at the completion.

Runs the demo recipe's SFT settings (Gemma-3-270M, LoRA, the recipe's dtype) twice on the same demo-world
prompts with the same seed, each path in its own subprocess so peak RSS is per path, and prints tokens/s,
the per-step losses side by side and the ratio. Run it under the heavy lock:

    flock /tmp/rv-heavy.lock .venv/bin/python bench/training_throughput.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"default": False, "completion_only": True}
logger = logging.getLogger("bench.training_throughput")


def worker(args: argparse.Namespace) -> dict:
    """One training run in this process; returns per-step timings, tokens and losses."""
    import torch
    from transformers import TrainerCallback

    from rubric_pipeline.demo_world import generate_world, make_responses
    from verifier.train.data import build_splits
    from verifier.train.sft import run_sft, sft_config

    torch.set_num_threads(args.threads)
    overrides = {
        "model_name_or_path": args.model,
        "output_dir": args.output_dir,
        "completion_only_logits": PATHS[args.worker],
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "max_train_windows": args.steps * args.batch_size,
        "max_eval_windows": 0,
        "logging_steps": 1,
        "merge": False,
        "num_threads": args.threads,
    }
    config = sft_config(args.recipe, **overrides)
    examples = make_responses(generate_world(seed=0), seed=0)
    splits = build_splits(
        examples, config.window_options(), eval_fraction=config.options.eval_fraction, max_eval_windows=0
    )  # no agreement eval: it would add generation time and memory to the training figures

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *_, **__):
            self._start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self._start)

    timer = StepTimer()
    result = run_sft(config, splits=splits, callbacks=(timer,))
    logged = [entry for entry in result.log_history if "loss" in entry]
    cumulative = [int(entry["num_tokens"]) for entry in logged]
    tokens = [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)]
    return {
        "path": args.worker,
        "losses": [float(entry["loss"]) for entry in logged],
        "step_seconds": timer.seconds,
        "step_tokens": tokens,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "config": {
            "dtype": config.model.dtype,
            "use_peft": config.model.use_peft,
            "lora_r": config.model.lora_r,
            "batch_size": config.training.per_device_train_batch_size,
            "max_length": config.training.max_length,
        },
    }


def summarise(run: dict) -> dict:
    # the first step pays one-off costs (allocator warm-up, lazy init): report it apart
    steady_s = sum(run["step_seconds"][1:]) or sum(run["step_seconds"])
    steady_tokens = sum(run["step_tokens"][1:]) or sum(run["step_tokens"])
    return {
        "tokens_per_s": steady_tokens / steady_s,
        "s_per_step": steady_s / max(len(run["step_seconds"]) - 1, 1),
        "first_step_s": run["step_seconds"][0],
        "tokens_per_step": steady_tokens / max(len(run["step_tokens"]) - 1, 1),
        "peak_rss_gib": run["peak_rss_gib"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "demo.yaml"))
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "gemma-3-270m"))
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per path (first is warm-up)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "training_throughput.json"))
    parser.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return 0

    runs = {}
    with tempfile.TemporaryDirectory(prefix="rv-throughput-") as tmp:
        for name in PATHS:
            result_file = Path(tmp) / f"{name}.json"
            command = [
                sys.executable, __file__, "--worker", name, "--recipe", args.recipe, "--model", args.model,
                "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                "--threads", str(args.threads),
                "--output-dir", str(Path(tmp) / name), "--result", str(result_file),
            ]  # fmt: skip
            print(f"running {name} path ({args.steps} steps, batch {args.batch_size}) ...", flush=True)
            subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": str(args.threads)})
            runs[name] = json.loads(result_file.read_text())

    default, ours = summarise(runs["default"]), summarise(runs["completion_only"])
    diffs = [
        abs(a - b) for a, b in zip(runs["default"]["losses"], runs["completion_only"]["losses"], strict=True)
    ]
    report = {
        "command": " ".join(["python", "bench/training_throughput.py", *sys.argv[1:]]),
        "model_name_or_path": args.model,
        "steps": args.steps,
        "threads": args.threads,
        "config": runs["default"]["config"],
        "default": default,
        "completion_only": ours,
        "speedup_tokens_per_s": ours["tokens_per_s"] / default["tokens_per_s"],
        "rss_saved_gib": default["peak_rss_gib"] - ours["peak_rss_gib"],
        "losses": {
            "default": runs["default"]["losses"],
            "completion_only": runs["completion_only"]["losses"],
        },
        "max_abs_loss_diff": max(diffs),
        "max_rel_loss_diff": max(d / abs(a) for d, a in zip(diffs, runs["default"]["losses"], strict=True)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{'':18}{'default TRL path':>18}{'completion-only':>18}{'ratio':>8}")
    for key, label in (
        ("tokens_per_s", "tokens/s"),
        ("s_per_step", "s/step"),
        ("peak_rss_gib", "peak RSS GiB"),
    ):
        print(f"{label:18}{default[key]:18.2f}{ours[key]:18.2f}{ours[key] / default[key]:8.2f}")
    print("\nstep  loss(default)  loss(completion-only)")
    for step, (a, b) in enumerate(zip(*report["losses"].values(), strict=True), start=1):
        print(f"{step:4}  {a:13.5f}  {b:21.5f}")
    speedup, diff = report["speedup_tokens_per_s"], report["max_abs_loss_diff"]
    print(f"\nspeed-up {speedup:.2f}x tokens/s; max |loss diff| {diff:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
