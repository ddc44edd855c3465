"""Stage 2: GRPO (TRL ``GRPOTrainer``) from the stage 1 model, rewarded against the teacher labels.

The reward is Search-Gen-V's verifiable reward, :func:`verifier.reward.rl_reward`: 0.35 macro-F1 +
0.35 exact match + 0.2 reasoning tag + 0.1 output-format compliance, 0 when the label count is wrong.
The GRPO dataset rows carry the teacher labels and the requested format as columns, which TRL passes to
the reward function by name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.config import option
from verifier.train_data import WindowOptions
from verifier.train_sft import StageResult

logger = logging.getLogger(__name__)


@dataclass
class RLStageConfig:
    """Stage 2 settings; each field is a `train rl` flag and a key of a recipe's `rl` section."""

    model: str = option("", help="stage 1 model directory (merged)")
    data: str = option("", help="labelled examples JSONL (teacher labels are the reward's reference)")
    eval_data: str | None = option(None, help="held-out labelled JSONL; default: split `data` by question")
    output_dir: str = option("runs/rl", help="checkpoints, logs and the merged model (`merged/`) go here")
    eval_fraction: float = option(0.2, help="fraction of questions held out (never trained on)")
    window_min: int = option(1, help="smallest rubric window per prompt")
    window_max: int = option(10, help="largest rubric window per prompt")
    output_formats: list[str] = option(["json"], help="output formats requested, sampled per prompt")
    reasoning_rate: float = option(0.0, help="fraction of prompts that ask for a <reasoning> block first")
    max_train_windows: int | None = option(None, help="cap on training prompts")
    dtype: Literal["auto", "float32", "bfloat16"] = option("auto", help="weights dtype")
    use_lora: bool = option(False, help="train a LoRA adapter instead of all weights")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_target_modules: str = option("all-linear", help="modules LoRA adapts (PEFT syntax)")
    learning_rate: float = option(1e-6, help="peak learning rate")
    num_train_epochs: float = option(1.0, help="epochs over the training prompts")
    max_steps: int = option(-1, help="stop after this many optimizer steps (-1: use epochs)")
    per_device_train_batch_size: int = option(4, help="completions per device per step")
    gradient_accumulation_steps: int = option(1, help="micro-batches per optimizer step")
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
    bf16: bool | None = option(None, help="bf16 mixed precision (default: on with CUDA, off on CPU)")
    gradient_checkpointing: bool = option(False, help="trade compute for memory")
    logging_steps: int = option(1, help="log every N steps")
    save_steps: int = option(0, help="checkpoint every N steps (0: none)")
    resume_from_checkpoint: str | None = option(None, help="checkpoint dir, or 'latest' in output_dir")
    merge: bool = option(True, help="write a merged plain model to output_dir/merged")
    num_threads: int | None = option(None, help="torch CPU threads")
    seed: int = option(0, help="seed for windows, split and sampling")
    trl_args: dict[str, Any] = option({}, help="extra TRL GRPOConfig fields (recipe only)")

    def window_options(self) -> WindowOptions:
        return WindowOptions(
            self.window_min, self.window_max, tuple(self.output_formats), self.reasoning_rate, True, self.seed
        )


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
        from verifier.reward import rl_reward

        formats = output_format or ["json"] * len(completions)
        rewards: list[float | None] = []
        for completion, labels, requested in zip(completions, teacher_labels, formats, strict=True):
            if not labels:
                rewards.append(None)
                continue
            rewards.append(rl_reward(completion_text(completion), list(labels), requested))
        return rewards


def trl_grpo_config(config: RLStageConfig):
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
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
        "bf16": cuda if config.bf16 is None else config.bf16,
        "use_cpu": not cuda,
        "activation_checkpointing": config.gradient_checkpointing,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps > 0 else "no",
        "save_steps": max(config.save_steps, 1),
        "report_to": "none",
        "seed": config.seed,
        "dataloader_num_workers": 0,
    }
    kwargs.update(config.trl_args)
    return GRPOConfig(**kwargs)


def run_rl(config: RLStageConfig, splits=None) -> StageResult:
    """Train stage 2 and return where the merged model is."""
    import torch
    from trl import GRPOTrainer

    from verifier.train_data import build_splits, read_labelled, to_dataset
    from verifier.train_sft import load_model_and_tokenizer, lora_config, resolve_resume, save_stage_model

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if not config.model:
        raise ValueError("rl: --model is required (the stage 1 model directory)")
    if splits is None:
        if not config.data:
            raise ValueError("rl: --data is required (a labelled JSONL file)")
        eval_examples = read_labelled(config.eval_data) if config.eval_data else None
        splits = build_splits(
            read_labelled(config.data),
            config.window_options(),
            eval_examples=eval_examples,
            eval_fraction=config.eval_fraction,
            max_train_windows=config.max_train_windows,
        )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "stage_config.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")

    from transformers import set_seed

    set_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[LabelReward()],
        args=trl_grpo_config(config),
        train_dataset=to_dataset([window.grpo_row() for window in splits.train]),
        processing_class=tokenizer,
        peft_config=lora_config(config.lora_r, config.lora_alpha, 0.0, config.lora_target_modules)
        if config.use_lora
        else None,
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resolve_resume(config.resume_from_checkpoint, config.output_dir))
    seconds = time.perf_counter() - started
    model_dir = output_dir / ("merged" if config.merge else "final")
    save_stage_model(trainer, tokenizer, config.model, config.dtype, model_dir, config.merge)
    history = list(trainer.state.log_history)
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    logger.info("GRPO done: %d steps, mean reward by log step %s", trainer.state.global_step, rewards)
    return StageResult(
        output_dir=str(output_dir),
        model_dir=str(model_dir),
        global_step=trainer.state.global_step,
        steps_run=trainer.state.global_step,
        train_seconds=seconds,
        log_history=history,
    )
