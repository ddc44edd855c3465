"""What the two training stages share: the common config fields, model loading, data, saving.

``SFTStageConfig`` (stage 1) and ``RLStageConfig`` (stage 2) extend :class:`StageConfig`; each field is a
flag of `train sft` / `train rl` and a key of the recipe section. A stage run is: :func:`prepare_stage`
(threads, data, output dir, seed), the TRL trainer, then :func:`finish_stage` (save, merge, result).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.core.config import option
from rubric_pipeline.core.errors import ConfigError
from verifier.train.data import WindowOptions

logger = logging.getLogger(__name__)


@dataclass
class StageConfig:
    """Fields common to both stages (a stage's own defaults override some of them)."""

    model: str = option("", help="model directory to start from (or hub id when online)")
    data: str = option("", help="labelled examples JSONL (teacher/human labels)")
    eval_data: str | None = option(None, help="held-out labelled JSONL; default: split `data` by question")
    output_dir: str = option("runs/stage", help="checkpoints, logs and the merged model (`merged/`) go here")
    eval_fraction: float = option(0.2, help="fraction of questions held out when eval_data is unset")
    window_min: int = option(1, help="smallest rubric window per prompt")
    window_max: int = option(10, help="largest rubric window per prompt")
    output_formats: list[str] = option(
        ["json"], help="output formats sampled per prompt (prompt.OUTPUT_FORMATS)"
    )
    reasoning_rate: float = option(0.0, help="fraction of prompts that ask for a <reasoning> block first")
    max_train_windows: int | None = option(None, help="cap on training prompts (after windowing)")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", help="weights dtype (auto: the checkpoint's)"
    )
    use_lora: bool = option(True, help="train a LoRA adapter (PEFT) instead of all weights")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.0, help="LoRA dropout")
    lora_target_modules: str = option("all-linear", help="modules LoRA adapts (PEFT syntax)")
    learning_rate: float = option(2e-4, help="peak learning rate")
    num_train_epochs: float = option(1.0, help="epochs over the training prompts")
    max_steps: int = option(-1, help="stop after this many optimizer steps (-1: use epochs)")
    per_device_train_batch_size: int = option(4, help="prompts per device per step")
    gradient_accumulation_steps: int = option(1, help="micro-batches per optimizer step")
    gradient_checkpointing: bool = option(
        False, help="trade compute for memory (off: faster on small models)"
    )
    bf16: bool | None = option(None, help="bf16 mixed precision (default: on with CUDA, off on CPU)")
    logging_steps: int = option(5, help="log every N steps")
    save_steps: int = option(0, help="checkpoint every N steps (0: no intermediate checkpoints)")
    resume_from_checkpoint: str | None = option(None, help="checkpoint dir, or 'latest' in output_dir")
    merge: bool = option(True, help="write a merged plain model to output_dir/merged")
    num_threads: int | None = option(None, help="torch CPU threads (default: torch's)")
    seed: int = option(0, help="seed for windows, split and training")
    trl_args: dict[str, Any] = option(
        {}, help="extra TRL trainer config fields (recipe only), e.g. deepspeed"
    )

    def window_options(self) -> WindowOptions:
        return WindowOptions(
            self.window_min, self.window_max, tuple(self.output_formats), self.reasoning_rate, True, self.seed
        )

    def trainer_kwargs(self) -> dict[str, Any]:
        """The TRL/transformers training arguments both stages set the same way."""
        import torch

        cuda = torch.cuda.is_available()
        return {
            "output_dir": self.output_dir,
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "activation_checkpointing": self.gradient_checkpointing,
            "bf16": cuda if self.bf16 is None else self.bf16,
            "use_cpu": not cuda,
            "logging_steps": self.logging_steps,
            "save_strategy": "steps" if self.save_steps > 0 else "no",
            "save_steps": max(self.save_steps, 1),
            "report_to": "none",
            "seed": self.seed,
            "dataloader_num_workers": 0,
        }

    def peft_config(self):
        """The LoRA config for PEFT, or None for full fine-tuning."""
        if not self.use_lora:
            return None
        return lora_config(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)


@dataclass
class StageResult:
    """What a training stage leaves behind, for the CLI, the bench and the tests."""

    output_dir: str
    model_dir: str
    global_step: int
    steps_run: int
    train_seconds: float
    log_history: list[dict[str, Any]] = field(default_factory=list)
    agreement: dict[str, float] | None = None


def load_model_and_tokenizer(model_path: str, dtype: str = "auto"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
    return model, tokenizer


def lora_config(r: int, alpha: int, dropout: float, target_modules: str):
    from peft import LoraConfig

    targets: str | list[str] = target_modules if target_modules == "all-linear" else target_modules.split(",")
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def prepare_stage(config: StageConfig, stage: str, splits=None, **split_options: Any):
    """Threads, the training splits (from ``config.data`` unless given), output dir, seed, the model.

    Returns ``(splits, model, tokenizer)``. ``split_options`` go to ``build_splits`` (augmentation rate,
    eval cap: what differs between the stages).
    """
    import torch
    from transformers import set_seed

    from verifier.train.data import build_splits, read_labelled

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if not config.model:
        raise ConfigError(f"{stage}: --model is required (a model directory)")
    if splits is None:
        if not config.data:
            raise ConfigError(f"{stage}: --data is required (a labelled JSONL file)")
        eval_examples = read_labelled(config.eval_data) if config.eval_data else None
        splits = build_splits(
            read_labelled(config.data),
            config.window_options(),
            eval_examples=eval_examples,
            eval_fraction=config.eval_fraction,
            max_train_windows=config.max_train_windows,
            **split_options,
        )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "stage_config.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")
    set_seed(config.seed)  # before PEFT creates the adapter inside the trainer: same init for the same seed
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    return splits, model, tokenizer


def resolve_resume(value: str | None, output_dir: str) -> str | bool | None:
    if value in (None, "", "none"):
        return None
    if value == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            logger.info("no checkpoint in %s: starting fresh", output_dir)
        return last
    return value


def train_and_save(trainer, tokenizer, config: StageConfig) -> tuple[Path, float]:
    """Train (resuming if asked), then write the model; returns (model dir, training seconds)."""
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resolve_resume(config.resume_from_checkpoint, config.output_dir))
    seconds = time.perf_counter() - started
    model_dir = Path(config.output_dir) / ("merged" if config.merge else "final")
    save_stage_model(trainer, tokenizer, config.model, config.dtype, model_dir, config.merge)
    return model_dir, seconds


def save_merged(model, tokenizer, out_dir: Path) -> Path:
    """Merge a LoRA adapter (if any) in memory and write a plain model directory that vLLM can serve."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out_dir)
    logger.info("merged model written to %s", out_dir)
    return out_dir


def save_stage_model(trainer, tokenizer, base_model: str, dtype: str, out_dir: Path, merge: bool) -> Path:
    """Write the trained model: merged plain weights (``merge``) or the adapter / full weights as trained.

    Under several processes (DeepSpeed ZeRO-3, FSDP) the weights are sharded: ``trainer.save_model``
    gathers them, and a LoRA adapter is merged afterwards on the main process from the saved files.
    """
    is_peft = hasattr(trainer.model, "merge_and_unload")
    if not merge or not is_peft:
        trainer.save_model(str(out_dir))
        if trainer.accelerator.is_main_process:
            tokenizer.padding_side = "right"
            tokenizer.save_pretrained(out_dir)
        return out_dir
    if trainer.accelerator.num_processes == 1:
        return save_merged(trainer.model, tokenizer, out_dir)
    adapter_dir = out_dir.parent / "adapter"
    trainer.save_model(str(adapter_dir))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(base_model, dtype)
        save_merged(PeftModel.from_pretrained(base, str(adapter_dir)), tokenizer, out_dir)
    trainer.accelerator.wait_for_everyone()
    return out_dir
