"""Stage 2: GRPO (TRL ``GRPOTrainer``) from the stage 1 model, rewarded against the teacher labels.

The reward is Search-Gen-V's verifiable reward, :func:`verifier.train.rl_reward.rl_reward`: 0.35 label F1
+ 0.35 exact match + 0.2 reasoning-tag credit + 0.1 output-format compliance, 0 on a wrong label count or a
zero F1. The GRPO dataset rows carry the teacher labels and the requested format as columns, which TRL
passes to the reward function by name. ``dynamic_sampling`` adds DAPO's filter of groups without reward
spread and ``max_num_gen_batches`` its refill of them with new prompts' groups
(:mod:`verifier.train.dynamic_sampling`); the entropy bonus is TRL's own ``entropy_coef``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from rubric_pipeline.core.config import option
from verifier.train.data import to_dataset
from verifier.train.dynamic_sampling import DynamicSamplingGRPOTrainer
from verifier.train.rl_reward import rl_reward
from verifier.train.stage import (
    StageConfig,
    StageOptions,
    StageResult,
    StageSpec,
    build_stage_config,
    prepare_stage,
    train_and_save,
)
from verifier.train.tail_average import tail_average_callbacks

logger = logging.getLogger(__name__)


@dataclass
class RLOptions(StageOptions):
    """Stage 2's own fields (beside TRL's ``ModelConfig`` and ``GRPOConfig``)."""

    data: str = option("", help="labelled examples JSONL (teacher labels are the reward's reference)")
    dynamic_sampling: bool = option(
        False, help="DAPO's filter: leave groups without reward spread out of the loss"
    )
    max_num_gen_batches: int = option(
        1,
        help="with dynamic_sampling, DAPO's refill: generation batches per step at most (verl's "
        "filter_groups.max_num_gen_batches; Search-Gen-V: 5); flat groups are replaced by new prompts' "
        "groups with spread; 1 = filter only. Generates with transformers (not with use_vllm)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_num_gen_batches < 1:
            raise ValueError(f"max_num_gen_batches must be at least 1, got {self.max_num_gen_batches}")
        if self.max_num_gen_batches > 1 and not self.dynamic_sampling:
            raise ValueError("max_num_gen_batches > 1 (DAPO's refill) needs dynamic_sampling: true")


RL = StageSpec(
    name="rl",
    options=RLOptions,
    training=GRPOConfig,
    defaults={
        "output_dir": "runs/rl",
        "use_peft": False,
        "logging_steps": 1,
        "num_generations": 4,
        "max_completion_length": 64,
        "epsilon_high": 0.28,  # DAPO clip-higher (TRL: epsilon)
    },
)


def rl_config(recipe: str | Path | dict[str, Any] | None = None, **overrides: Any) -> StageConfig:
    """Stage 2's config: toolkit defaults, the recipe's ``rl`` section, then ``overrides`` (any field)."""
    return build_stage_config(RL, recipe, overrides)


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as message lists and standard ones as strings."""
    if isinstance(completion, str):
        return completion
    return "".join(
        message.get("content") or "" for message in completion if message.get("role") == "assistant"
    )


class LabelReward:
    """TRL reward function: ``rl_reward`` of each completion against its row's teacher labels.

    Reads the ``teacher_labels`` and ``output_format`` dataset columns (TRL passes every extra column as a
    keyword list). A row without teacher labels returns None (TRL skips it) rather than a fake 0.
    """

    __name__ = "rubric_label_reward"

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        teacher_labels: Sequence[Sequence[str] | None],
        output_format: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:

        formats = output_format or ["json"] * len(completions)
        rewards: list[float | None] = []
        for completion, labels, requested in zip(completions, teacher_labels, formats, strict=True):
            if not labels:
                rewards.append(None)
                continue
            rewards.append(rl_reward(completion_text(completion), list(labels), requested))
        return rewards


def run_rl(config: StageConfig, splits=None) -> StageResult:
    """Train stage 2 and return where the merged model is."""
    splits, model, tokenizer = prepare_stage(config, "rl", splits)
    trainer = DynamicSamplingGRPOTrainer(
        model=model,
        reward_funcs=[LabelReward()],
        args=config.training,
        train_dataset=to_dataset([window.grpo_row() for window in splits.train]),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
        callbacks=tail_average_callbacks(config.options.average_tail),
        dynamic_sampling=config.options.dynamic_sampling,
        max_num_gen_batches=config.options.max_num_gen_batches,
    )
    model_dir, seconds = train_and_save(trainer, tokenizer, config)
    history = list(trainer.state.log_history)
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    logger.info("GRPO done: %d steps, mean reward by log step %s", trainer.state.global_step, rewards)
    return StageResult(
        output_dir=config.training.output_dir,
        model_dir=str(model_dir),
        global_step=trainer.state.global_step,
        steps_run=trainer.state.global_step,
        train_seconds=seconds,
        log_history=history,
    )
