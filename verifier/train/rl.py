"""Stage 2: GRPO (TRL ``GRPOTrainer``) from the stage 1 model, rewarded against the teacher labels.

The reward is Search-Gen-V's verifiable reward, :func:`verifier.judge.reward.rl_reward`: 0.35 macro-F1 +
0.35 exact match + 0.2 reasoning tag + 0.1 output-format compliance, 0 when the label count is wrong.
The GRPO dataset rows carry the teacher labels and the requested format as columns, which TRL passes to
the reward function by name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rubric_pipeline.core.config import option
from verifier.train.rl_reward import rl_reward
from verifier.train.stage import StageConfig, StageResult, prepare_stage, train_and_save

logger = logging.getLogger(__name__)


@dataclass
class RLStageConfig(StageConfig):
    """Stage 2 settings; each field is a `train rl` flag and a key of a recipe's `rl` section."""

    model: str = option("", help="stage 1 model directory (merged)")
    data: str = option("", help="labelled examples JSONL (teacher labels are the reward's reference)")
    output_dir: str = option("runs/rl", help="checkpoints, logs and the merged model (`merged/`) go here")
    use_lora: bool = option(False, help="train a LoRA adapter (PEFT) instead of all weights")
    learning_rate: float = option(1e-6, help="peak learning rate")
    logging_steps: int = option(1, help="log every N steps")
    num_generations: int = option(4, help="completions sampled per prompt (the GRPO group)")
    generation_batch_size: int | None = option(
        None, help="completions per generation round (default: global batch x accumulation steps)"
    )
    max_completion_length: int = option(64, help="tokens generated per completion")
    temperature: float = option(1.0, help="sampling temperature")
    beta: float = option(0.0, help="KL coefficient (0: no reference model)")
    epsilon: float = option(0.2, help="lower clip range")
    epsilon_high: float | None = option(0.28, help="upper clip range (DAPO clip-higher)")
    loss_type: str = option("dapo", help="GRPO loss normalisation (TRL loss_type)")
    use_vllm: bool = option(False, help="generate with vLLM (GPU)")
    vllm_mode: str = option("colocate", help="vLLM mode: colocate or server")


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


def trl_grpo_config(config: RLStageConfig):
    """Our stage config -> TRL ``GRPOConfig``."""
    from trl import GRPOConfig

    kwargs: dict[str, Any] = config.trainer_kwargs() | {
        "num_generations": config.num_generations,
        # None: TRL derives it (batch x processes x accumulation) and checks it divides by num_generations
        "generation_batch_size": config.generation_batch_size,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "beta": config.beta,
        "epsilon": config.epsilon,
        "epsilon_high": config.epsilon_high,
        "loss_type": config.loss_type,
        "use_vllm": config.use_vllm,
        "vllm_mode": config.vllm_mode,
    }
    kwargs.update(config.trl_args)
    return GRPOConfig(**kwargs)


def run_rl(config: RLStageConfig, splits=None) -> StageResult:
    """Train stage 2 and return where the merged model is."""
    from trl import GRPOTrainer

    from verifier.train.data import to_dataset

    splits, model, tokenizer = prepare_stage(config, "rl", splits)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[LabelReward()],
        args=trl_grpo_config(config),
        train_dataset=to_dataset([window.grpo_row() for window in splits.train]),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
    )
    model_dir, seconds = train_and_save(trainer, tokenizer, config)
    history = list(trainer.state.log_history)
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    logger.info("GRPO done: %d steps, mean reward by log step %s", trainer.state.global_step, rewards)
    return StageResult(
        output_dir=config.output_dir,
        model_dir=str(model_dir),
        global_step=trainer.state.global_step,
        steps_run=trainer.state.global_step,
        train_seconds=seconds,
        log_history=history,
    )
