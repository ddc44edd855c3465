"""Does the verifier learn? Label agreement on held-out questions before/after SFT and after GRPO.

Demo mode (default): the demo world's responses carry their true labels (the teacher here), master-key
negatives come from ``verifier.data.augment`` with the ``multilingual`` family held out. Questions are split
once; every model is served by the real vLLM engine and judged through the served contract (structured
outputs), on the held-out questions only:

- zero-shot base model,
- stage 1 with augmentation, stage 1 without augmentation (same prompts otherwise),
- stage 2 (GRPO) from the augmented stage 1 model.

TREC mode (``--mode trec``): fine-tune on ``dev.jsonl`` and evaluate on ``test.jsonl`` (about an hour).

    flock /tmp/rv-heavy.lock .venv/bin/python bench/learning.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TREC_DIR = ROOT.parent / "shared" / "data" / "trec_rag24"
HELDOUT_FAMILIES = ("multilingual",)
logger = logging.getLogger("bench.learning")


def judge_served(model_dir: str, examples: list, name: str, log_dir: Path, concurrency: int = 16) -> dict:
    """Serve ``model_dir`` with vLLM, judge ``examples`` through the served contract, build the report."""
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.hints import model_hints
    from verifier.judge.judges import LLMJudge, judge_all
    from verifier.serve.engine import EngineConfig, VLLMEngine

    async def judge_all_examples(engine: VLLMEngine) -> tuple[list, float]:
        config = LLMConfig(base_urls=[engine.base_url], model=engine.model_name, timeout_s=300.0)
        async with LLMClient(config) as client:
            start = time.perf_counter()
            # the model, not the gateway's guard; the prompt it was trained on (its prompt card)
            judge = LLMJudge(client, degenerate_guard=False, hints=model_hints(model_dir))
            judgements = await judge_all(judge, examples, concurrency=concurrency, progress=False)
            return judgements, time.perf_counter() - start

    engine_config = EngineConfig(
        model=model_dir, max_model_len=2048, log_path=str(log_dir / f"vllm-{name}.log"), cpu_threads="0-1"
    )
    with VLLMEngine(engine_config) as engine:
        judgements, wall_s = asyncio.run(judge_all_examples(engine))
    return summarise(examples, judgements, name, wall_s)


def judge_lexical(train_examples: list, examples: list) -> dict:
    """The lexical-overlap baseline judge, thresholds fitted on the training questions' responses."""
    from verifier.judge.baselines import LexicalJudge
    from verifier.judge.judges import judge_all
    from verifier.train.data import is_augmented

    judge = LexicalJudge().fit([example for example in train_examples if not is_augmented(example)])
    start = time.perf_counter()
    judgements = asyncio.run(judge_all(judge, examples, progress=False))
    return summarise(examples, judgements, "lexical", time.perf_counter() - start)


def summarise(examples: list, judgements: list, name: str, wall_s: float) -> dict:
    """The evaluation report plus the figures the bench table shows."""
    from verifier.eval.evaluate import build_report

    report = build_report(examples, judgements, judge=name, wall_s=wall_s, heldout_families=HELDOUT_FAMILIES)
    labels = report["labels"]
    judged_rubrics = labels["n"]
    total_rubrics = judged_rubrics + labels["unjudgeable"]["rubrics"]
    summary = {
        "label_agreement": labels["accuracy"] * judged_rubrics / total_rubrics if total_rubrics else 0.0,
        "accuracy_judged": labels["accuracy"],
        "macro_f1": labels["macro_f1"],
        "unjudgeable_examples": labels["unjudgeable"]["examples"],
        "heldout_master_key_fpr": report["master_key"]["fpr"],
        "master_key_fpr_by_family": {k: v["fpr"] for k, v in report["master_key"]["families"].items()},
    }
    logger.warning("%s: %s", name, summary)
    return {"summary": summary, "report": report}


def sample_per_family(examples: list, per_family: int, seed: int) -> list:
    """At most ``per_family`` master-key examples of each family (all when ``per_family`` <= 0)."""
    import random

    from verifier.eval.evaluate import augment_family

    if per_family <= 0:
        return examples
    by_family: dict[str, list] = {}
    for example in examples:
        by_family.setdefault(augment_family(example.label_source) or "", []).append(example)
    rng = random.Random(seed)
    return [
        ex
        for family in sorted(by_family)
        for ex in rng.sample(by_family[family], min(per_family, len(by_family[family])))
    ]


def demo_data(args: argparse.Namespace, sft_config):
    """Demo examples + augmentation, split by question: (splits by name, eval examples, train pool)."""
    from rubric_pipeline.demo_world import generate_world, make_responses
    from verifier.data.augment import AugmentConfig, augment_examples
    from verifier.train.data import build_splits, is_augmented, split_by_question

    world = generate_world(seed=args.seed, n_questions=args.questions, n_documents=10 * args.questions)
    examples = make_responses(world, seed=args.seed)
    augmented = augment_examples(
        examples, AugmentConfig(heldout_families=list(HELDOUT_FAMILIES), regroup_rounds=0, seed=args.seed)
    )
    train_pool, held_out = split_by_question(
        augmented.splits["train"], sft_config.options.eval_fraction, args.seed
    )
    eval_qids = {example.qid for example in held_out}
    eval_real = [example for example in held_out if not is_augmented(example)]
    eval_keys = [example for example in held_out if is_augmented(example)]  # train families, unseen questions
    heldout_keys = [example for example in augmented.splits["heldout_keys"] if example.qid in eval_qids]
    eval_keys = sample_per_family(eval_keys, args.eval_keys_per_family, args.seed)
    heldout_keys = sample_per_family(heldout_keys, args.eval_keys_per_family, args.seed)
    options = sft_config.window_options()
    common = {
        "eval_examples": held_out,
        "max_train_windows": sft_config.options.max_train_windows,
        "max_eval_windows": args.eval_windows,
    }
    splits = {
        "with_augmentation": build_splits(
            train_pool, options, augment_rate=sft_config.options.augment_rate, **common
        ),
        "without_augmentation": build_splits(train_pool, options, augment_rate=0.0, **common),
    }
    return splits, eval_real + eval_keys + heldout_keys, train_pool


def trec_data(args: argparse.Namespace, sft_config):
    from verifier.train.data import build_splits, read_labelled

    train = read_labelled(TREC_DIR / "dev.jsonl")
    test = read_labelled(TREC_DIR / "test.jsonl")
    common = {
        "eval_examples": test,
        "max_train_windows": sft_config.options.max_train_windows,
        "max_eval_windows": args.eval_windows,
    }
    return {"with_augmentation": build_splits(train, sft_config.window_options(), **common)}, test, train


def main() -> int:
    from verifier.judge.hints import HINT_MODES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["demo", "trec"], default="demo")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "demo.yaml"))
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "gemma-3-270m"))
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-learning"))
    parser.add_argument("--out", default=None, help="default bench/results/learning[-trec].json")
    parser.add_argument("--skip-rl", action="store_true", help="stop after stage 1")
    parser.add_argument("--skip-no-augment", action="store_true", help="skip the run without augmentation")
    parser.add_argument("--max-train-windows", type=int, default=None, help="override the recipe's cap")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the recipe's SFT lr")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipe's SFT epochs")
    parser.add_argument(
        "--eval-keys-per-family", type=int, default=12, help="master-key eval examples per family (0: all)"
    )
    parser.add_argument("--questions", type=int, default=40, help="demo world size (questions)")
    parser.add_argument(
        "--eval-windows", type=int, default=0, help="held-out prompts for the in-training eval (0: none)"
    )
    parser.add_argument("--eval-steps", type=int, default=0, help="in-training eval every N steps")
    parser.add_argument("--warmup", type=float, default=None, help="override the recipe's SFT warm-up")
    parser.add_argument(
        "--lr-scheduler", default=None, help="override the SFT schedule (linear, constant...)"
    )
    parser.add_argument("--window-passes", type=int, default=None, help="override the recipe's window passes")
    parser.add_argument(
        "--hints", choices=HINT_MODES, default=None,
        help="override the recipe's rubric-line hints (verifier.judge.hints)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training (recipe's)")
    parser.add_argument(
        "--max-train-seconds", type=float, default=None,
        help="stop stage 1 after this many training seconds (evaluations left out)",
    )  # fmt: skip
    parser.add_argument(
        "--sft-set", action="append", default=[], metavar="FIELD=JSON",
        help="set any stage 1 field (recipe key), e.g. 'lora_target_modules=[\"q_proj\"]'; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--skip-zero-shot", action="store_true", help="do not judge the base model (known from trec_judges)"
    )
    parser.add_argument(
        "--stage1-model",
        default=None,
        help="reuse this merged stage 1 model (skip training it): for GRPO, or with --skip-rl judged alone",
    )
    parser.add_argument("--rl-steps", type=int, default=None, help="override the recipe's GRPO max_steps")
    parser.add_argument("--rl-learning-rate", type=float, default=None, help="override the recipe's GRPO lr")
    parser.add_argument(
        "--baselines-only", action="store_true", help="add the lexical baseline to the results file and stop"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from rubric_pipeline.core.config import parse_settings
    from verifier.hardware import speed_flags
    from verifier.train.data import TrainingSplits
    from verifier.train.rl import rl_config, run_rl
    from verifier.train.sft import run_sft, sft_config

    work = Path(args.work_dir) / args.mode
    work.mkdir(parents=True, exist_ok=True)
    overrides = {  # flags given on the command line beat the recipe's sft section
        "max_train_windows": args.max_train_windows,
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.epochs,
        "num_threads": args.threads,
        "warmup_steps": args.warmup,
        "lr_scheduler_type": args.lr_scheduler,
        "window_passes": args.window_passes,
        "hints": args.hints,
        "max_train_seconds": args.max_train_seconds,
    }
    sft_values = {"model_name_or_path": args.model, "seed": args.seed}
    sft_values |= {key: value for key, value in overrides.items() if value is not None}
    sft_values |= parse_settings(args.sft_set)
    # the in-training monitor: teacher-forced label accuracy on held-out prompts (one forward pass each)
    sft_values |= {"eval_mode": "teacher_forced", "eval_steps": args.eval_steps}
    if args.mode == "trec":
        sft_values |= {"window_min": 5, "window_max": 10, "augment_rate": 0.0, "max_length": 2048}
    base_sft = sft_config(args.recipe, **sft_values)
    if args.mode == "trec":
        splits, eval_examples, train_examples = trec_data(args, base_sft)
    else:
        splits, eval_examples, train_examples = demo_data(args, base_sft)
    if args.skip_no_augment:
        splits.pop("without_augmentation", None)

    out = Path(
        args.out or ROOT / "bench" / "results" / f"learning{'' if args.mode == 'demo' else '-trec'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join(["python", "bench/learning.py", *sys.argv[1:]])}
    results["data"] = {name: s.summary() for name, s in splits.items()} | {
        "eval_examples": len(eval_examples)
    }
    if args.mode == "demo":
        from rubric_pipeline.demo_world import generator_version

        results["data"] |= {"world_generator": generator_version(), "questions": args.questions}
    results["cpu_flags"] = speed_flags()

    def record(name: str, model_dir: str, stage=None) -> None:
        """Judge one model and rewrite the results file, so a cut-short run keeps what it measured."""
        results[name] = judge_served(model_dir, eval_examples, name, work)
        if stage is not None:
            results[name] |= {"train_seconds": stage.train_seconds, "steps": stage.global_step}
            losses = [entry["loss"] for entry in stage.log_history if "loss" in entry]
            if losses:
                results[name]["losses"] = losses
            rewards = [entry["reward"] for entry in stage.log_history if "reward" in entry]
            if rewards:
                results[name]["rewards"] = rewards
            monitor = [
                {
                    "step": entry["step"],
                    "train_seconds": entry.get("eval_train_seconds"),
                    "accuracy": entry["eval_teacher_forced_label_accuracy"],
                    "skipped_prompts": entry["eval_skipped_prompts"],
                }
                for entry in stage.log_history
                if "eval_teacher_forced_label_accuracy" in entry
            ]
            if monitor:
                results[name]["teacher_forced_held_out"] = monitor
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def stage1(name: str):
        config = sft_config(args.recipe, **sft_values, output_dir=str(work / f"sft-{name}"))
        stage = run_sft(config, splits=splits[name])
        record(f"sft_{name}", stage.model_dir, stage)
        return stage

    if (args.baselines_only or args.stage1_model) and out.exists():  # add to what an earlier run measured
        command = results["command"]
        data = results["data"]
        results = json.loads(out.read_text())
        results["command_resumed"] = command
        results["data"] = results.get("data", {}) | data
    results["lexical"] = judge_lexical(train_examples, eval_examples)  # seconds: no model
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.baselines_only:
        return 0
    if not args.skip_zero_shot:
        record("zero_shot", args.model)
    stage1_dir = args.stage1_model or stage1("with_augmentation").model_dir
    if args.stage1_model and args.skip_rl:  # judge a model trained earlier (its monitor stays in its folder)
        record("sft_with_augmentation", stage1_dir)
    if not args.skip_rl:
        rl_values = {"seed": args.seed, "model_name_or_path": stage1_dir, "output_dir": str(work / "rl")}
        optional = {"num_threads": args.threads, "max_steps": args.rl_steps}
        optional["learning_rate"] = args.rl_learning_rate
        rl = rl_config(args.recipe, **rl_values, **{k: v for k, v in optional.items() if v is not None})
        # RL prompts: the stage 1 training prompts (train questions only), windows no larger than the RL cap
        rl_windows = [w for w in splits["with_augmentation"].train if len(w.labels) <= rl.options.window_max]
        rl_split = TrainingSplits(train=rl_windows[: rl.options.max_train_windows or None], eval=[])
        rl_stage = run_rl(rl, splits=rl_split)
        record("grpo", rl_stage.model_dir, rl_stage)
    if "without_augmentation" in splits:
        stage1("without_augmentation")

    print(f"\n{'model':28}{'agreement':>10}{'macro-F1':>10}{'unjudged':>9}{'held-out key FPR':>18}")
    for name, entry in results.items():
        if not isinstance(entry, dict) or "summary" not in entry:
            continue
        s = entry["summary"]
        fpr = s["heldout_master_key_fpr"]
        fpr_text = "-" if fpr is None else f"{fpr:.3f}"
        print(
            f"{name:28}{s['label_agreement']:10.3f}{s['macro_f1']:10.3f}{s['unjudgeable_examples']:9}{fpr_text:>18}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
