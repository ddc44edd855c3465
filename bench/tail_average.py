"""Is the demo's last SFT step chance? Single checkpoints against the means of the last ones.

Trains the demo's stage 1 (``recipes/demo.yaml``'s ``sft`` section, iterate averaging off, a checkpoint every
``--every`` steps) on the training file ``make demo`` writes, then scores each checkpoint from ``--from-step``
on, and the mean of the checkpoints from each ``--tail-from`` step to the end, with the teacher-forced
held-out monitor the stage logs (the same 48 windows of held-out training-split questions). A work dir that
already holds the checkpoints is scored without training again.

    make demo   # writes runs/demo/labels/train_augmented.jsonl
    flock /tmp/rv-heavy.lock .venv/bin/python bench/tail_average.py
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path


def train(args: argparse.Namespace) -> list[str]:
    command = [
        str(Path(sys.executable).parent / "rubric-verifier"), "train", "sft", "--recipe", args.recipe,
        "--model", args.model, "--data", args.data, "--output-dir", args.work_dir,
        "--eval_steps", "10", "--max_eval_windows", str(args.eval_windows),
        "--save_steps", str(args.every), "--save_total_limit", "1000", "--no_merge",
        "--average_tail", "0", "--seed", str(args.seed),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return command


def checkpoints(work_dir: Path) -> dict[int, Path]:
    found = (re.fullmatch(r"checkpoint-(\d+)", path.name) for path in work_dir.glob("checkpoint-*"))
    return {int(match.group(1)): work_dir / match.group(0) for match in found if match}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--model", default=".cache/models/gemma-3-270m")
    parser.add_argument("--data", default="runs/demo/labels/train_augmented.jsonl")
    parser.add_argument("--work-dir", default="runs/tail-average")
    parser.add_argument("--every", type=int, default=5, help="a checkpoint every this many steps")
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--from-step", type=int, default=60, help="score single checkpoints from this step")
    parser.add_argument("--tail-from", type=int, nargs="+", default=[60, 80, 100])
    parser.add_argument("--out", default="bench/results/tail_average.json")
    args = parser.parse_args()

    import torch
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from verifier.hardware import speed_flags
    from verifier.train.sft import sft_config, teacher_forced_label_accuracy
    from verifier.train.stage import prepare_stage

    work_dir = Path(args.work_dir)
    command = None if checkpoints(work_dir) else train(args)
    found = checkpoints(work_dir)
    config = sft_config(
        args.recipe, model_name_or_path=args.model, data=args.data, max_eval_windows=args.eval_windows,
        output_dir=str(work_dir / "scoring"), seed=args.seed,
    )  # fmt: skip
    splits, model, tokenizer = prepare_stage(
        config, "sft", augment_rate=config.options.augment_rate, max_eval_windows=args.eval_windows
    )
    model = PeftModel.from_pretrained(model, str(found[max(found)]))

    def adapter(step: int) -> dict[str, torch.Tensor]:
        return load_file(str(found[step] / "adapter_model.safetensors"))

    def score(weights: dict[str, torch.Tensor], name: str, steps: list[int]) -> dict:
        set_peft_model_state_dict(model, weights)
        metrics = teacher_forced_label_accuracy(model, tokenizer, splits.eval)
        row = {"weights": name, "steps": steps} | metrics
        accuracy, macro = metrics["teacher_forced_label_accuracy"], metrics["teacher_forced_macro_f1"]
        print(f"{name:<28} accuracy {accuracy:.3f}  macro-F1 {macro:.3f}  picked {metrics['predicted']}")
        return row

    rows = [score(adapter(step), f"step {step}", [step]) for step in sorted(found) if step >= args.from_step]
    for first in args.tail_from:
        steps = [step for step in sorted(found) if step >= first]
        members = [adapter(step) for step in steps]
        mean = {key: sum(member[key].float() for member in members) / len(members) for key in members[0]}
        rows.append(score(mean, f"mean of steps {steps[0]}-{steps[-1]}", steps))
    gold = [label for window in splits.eval for label in window.labels]
    results = {
        "cpu_flags": speed_flags(),
        "eval_windows": len(splits.eval),
        "gold": {label: gold.count(label) for label in sorted(set(gold))},
        "rows": rows,
        "train_command": " ".join(command) if command else "checkpoints found in the work dir",
        "command": " ".join(["flock /tmp/rv-heavy.lock .venv/bin/python", *sys.argv]),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
