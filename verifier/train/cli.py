"""``rubric-verifier train sft|rl``: the two training stages, configured by a recipe and flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rubric_pipeline.core.config import add_config_arguments, build_config

STAGES = {
    "sft": "stage 1: supervised fine-tuning on teacher labels (TRL SFTTrainer, LoRA or full)",
    "rl": "stage 2: GRPO from the stage 1 model with the verifiable label reward (TRL GRPOTrainer)",
}


def _config_class(stage: str) -> type:
    if stage == "sft":
        from verifier.train.sft import SFTStageConfig

        return SFTStageConfig
    from verifier.train.rl import RLStageConfig

    return RLStageConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, help_text in STAGES.items():
        sub = stages.add_parser(stage, help=help_text, description=help_text)
        sub.add_argument(
            "--recipe", default=None, help=f"YAML recipe; its `{stage}` section fills the config"
        )
        sub.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        add_config_arguments(sub, _config_class(stage))


def run(args: argparse.Namespace) -> int:
    config = build_config(_config_class(args.stage), args.recipe, args.stage, args)
    if args.dry_run:
        print(json.dumps(asdict(config), indent=2, default=str))
        return 0
    if args.stage == "sft":
        from verifier.train.sft import run_sft

        result = run_sft(config)
    else:
        from verifier.train.rl import run_rl

        result = run_rl(config)
    print(
        f"{args.stage}: {result.global_step} steps in {result.train_seconds:.1f}s; model: {result.model_dir}"
    )
    if result.agreement:
        for key in ("label_agreement", "teacher_forced_label_accuracy"):
            value = result.agreement.get(key)
            if value is not None:
                print(f"held-out {key.replace('_', ' ')}: {value:.3f} ({result.agreement})")
    return 0
