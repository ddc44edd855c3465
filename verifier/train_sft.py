"""Stage 1: supervised fine-tuning on teacher labels with TRL's ``SFTTrainer`` (LoRA or full).

The loss is on the completion (the label list) only; with ``completion_only_logits`` the LM head also
runs only there (:mod:`verifier.completion_lm`). A callback measures label agreement on held-out
questions by greedy generation every ``eval_steps``. The result is merged into a plain model directory
(weights + tokenizer) that vLLM serves.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.config import option
from verifier.train_data import Window, WindowOptions

logger = logging.getLogger(__name__)


@dataclass
class SFTStageConfig:
    """Stage 1 settings; each field is a `train sft` flag and a key of a recipe's `sft` section."""

    model: str = option("", help="base model directory (or hub id when online)")
    data: str = option("", help="labelled examples JSONL (teacher/human labels, augment:* rows mixed in)")
    eval_data: str | None = option(None, help="held-out labelled JSONL; default: split `data` by question")
    output_dir: str = option("runs/sft", help="checkpoints, logs and the merged model (`merged/`) go here")
    eval_fraction: float = option(0.2, help="fraction of questions held out when eval_data is unset")
    window_min: int = option(1, help="smallest rubric window per prompt")
    window_max: int = option(10, help="largest rubric window per prompt")
    output_formats: list[str] = option(
        ["json"], help="output formats sampled per prompt (prompt.OUTPUT_FORMATS)"
    )
    augment_rate: float = option(0.0, help="augmented (augment:*) examples mixed in per plain example")
    max_train_windows: int | None = option(None, help="cap on training prompts (after windowing)")
    max_eval_windows: int | None = option(32, help="cap on held-out prompts for the agreement eval")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", help="weights dtype (auto: the checkpoint's)"
    )
    use_lora: bool = option(True, help="train a LoRA adapter (PEFT) instead of all weights")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.0, help="LoRA dropout")
    lora_target_modules: str = option("all-linear", help="modules LoRA adapts (PEFT syntax)")
    completion_only_logits: bool = option(True, help="compute logits/loss only at completion positions")
    learning_rate: float = option(2e-4, help="peak learning rate")
    num_train_epochs: float = option(1.0, help="epochs over the training prompts")
    max_steps: int = option(-1, help="stop after this many optimizer steps (-1: use epochs)")
    per_device_train_batch_size: int = option(4, help="prompts per device per step")
    gradient_accumulation_steps: int = option(1, help="micro-batches per optimizer step")
    max_length: int | None = option(2048, help="truncate prompt+completion to this many tokens")
    warmup_steps: float = option(0.0, help="warm-up steps (a value below 1 is a fraction of training)")
    lr_scheduler_type: str = option("linear", help="learning-rate schedule")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    gradient_checkpointing: bool = option(
        False, help="trade compute for memory (off: faster on small models)"
    )
    bf16: bool | None = option(None, help="bf16 mixed precision (default: on with CUDA, off on CPU)")
    logging_steps: int = option(5, help="log every N steps")
    save_steps: int = option(0, help="checkpoint every N steps (0: no intermediate checkpoints)")
    save_total_limit: int | None = option(2, help="checkpoints kept")
    resume_from_checkpoint: str | None = option(None, help="checkpoint dir, or 'latest' in output_dir")
    eval_steps: int = option(0, help="label-agreement eval every N steps (0: only at the end)")
    eval_max_new_tokens: int = option(64, help="tokens generated per eval prompt")
    eval_batch_size: int = option(8, help="prompts generated together in the agreement eval")
    merge: bool = option(True, help="write a merged plain model to output_dir/merged")
    num_threads: int | None = option(None, help="torch CPU threads (default: torch's)")
    seed: int = option(0, help="seed for windows, split and training")
    trl_args: dict[str, Any] = option({}, help="extra TRL SFTConfig fields (recipe only), e.g. deepspeed")

    def window_options(self) -> WindowOptions:
        return WindowOptions(
            self.window_min, self.window_max, tuple(self.output_formats), 0.0, True, self.seed
        )


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


def _stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the chat template's end-of-turn tokens, whichever exist."""
    ids = {tokenizer.eos_token_id}
    for token in ("<end_of_turn>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def label_agreement(model, tokenizer, windows: list[Window], max_new_tokens: int = 64, batch_size: int = 8):
    """Greedy-generate on held-out prompts; fraction of rubric labels equal to the teacher's.

    An unparsable output counts as wrong on all its rubrics and is counted in ``parse_failures``.
    """
    import torch

    from verifier.prompt import ParseError, parse_labels

    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    stop_ids = _stop_token_ids(tokenizer)
    agree = total = exact = failures = 0
    try:
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(w.messages(), tokenize=False, add_generation_prompt=True)
                for w in batch
            ]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {key: value.to(model.device) for key, value in encoded.items()}
            with torch.no_grad():
                generated = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                )
            completions = tokenizer.batch_decode(
                generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for window, text in zip(batch, completions, strict=True):
                total += len(window.labels)
                try:
                    predicted = parse_labels(text, len(window.labels)).labels
                except ParseError:
                    failures += 1
                    continue
                agree += sum(p == t for p, t in zip(predicted, window.labels, strict=True))
                exact += predicted == window.labels
    finally:
        tokenizer.padding_side = "right"
        model.train(was_training)
    return {
        "label_agreement": agree / total if total else 0.0,
        "exact_match": exact / len(windows) if windows else 0.0,
        "parse_failures": failures,
        "eval_prompts": len(windows),
    }


def _agreement_callback(windows: list[Window], tokenizer, config: SFTStageConfig, log_path: Path):
    from transformers import TrainerCallback

    class AgreementCallback(TrainerCallback):
        """Label agreement on held-out questions every ``eval_steps`` and at the end of training."""

        def __init__(self) -> None:
            self.last: dict[str, float] | None = None
            self.steps_run = 0

        def _evaluate(self, state, model) -> None:
            metrics = label_agreement(
                model, tokenizer, windows, config.eval_max_new_tokens, config.eval_batch_size
            )
            metrics["step"] = state.global_step
            self.last = metrics
            state.log_history.append(
                {f"eval_{k}": v for k, v in metrics.items()} | {"step": state.global_step}
            )
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
            logger.info("held-out label agreement at step %d: %s", state.global_step, metrics)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.steps_run += 1
            if config.eval_steps and windows and state.global_step % config.eval_steps == 0:
                self._evaluate(state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if windows and (self.last is None or self.last["step"] != state.global_step):
                self._evaluate(state, model)

    return AgreementCallback()


def trl_sft_config(config: SFTStageConfig):
    """Our stage config -> TRL ``SFTConfig``."""
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    bf16 = cuda if config.bf16 is None else config.bf16
    save_strategy = "steps" if config.save_steps > 0 else "no"
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "warmup_steps": config.warmup_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        "weight_decay": config.weight_decay,
        "activation_checkpointing": config.gradient_checkpointing,
        "bf16": bf16,
        "use_cpu": not cuda,
        "completion_only_loss": True,
        "logging_steps": config.logging_steps,
        "save_strategy": save_strategy,
        "save_steps": max(config.save_steps, 1),
        "save_total_limit": config.save_total_limit,
        "eval_strategy": "no",
        "report_to": "none",
        "seed": config.seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
    }
    kwargs.update(config.trl_args)
    return SFTConfig(**kwargs)


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


def run_sft(config: SFTStageConfig, splits=None, callbacks: tuple = ()) -> StageResult:
    """Train stage 1 (on ``splits`` if given, else on ``config.data``) and return where the model is."""
    import torch

    from verifier.completion_lm import CompletionOnlySFTTrainer
    from verifier.train_data import build_splits, read_labelled, to_dataset

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if not config.model:
        raise ValueError("sft: --model is required (a model directory)")
    if splits is None:
        if not config.data:
            raise ValueError("sft: --data is required (a labelled JSONL file)")
        examples = read_labelled(config.data)
        eval_examples = read_labelled(config.eval_data) if config.eval_data else None
        splits = build_splits(
            examples,
            config.window_options(),
            eval_examples=eval_examples,
            eval_fraction=config.eval_fraction,
            augment_rate=config.augment_rate,
            max_train_windows=config.max_train_windows,
            max_eval_windows=config.max_eval_windows,
        )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "stage_config.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")

    from transformers import set_seed

    set_seed(config.seed)  # before PEFT creates the adapter inside the trainer: same init for the same seed
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    peft_config = (
        lora_config(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
        if config.use_lora
        else None
    )
    callback = _agreement_callback(splits.eval, tokenizer, config, output_dir / "agreement.jsonl")
    trainer = CompletionOnlySFTTrainer(
        model=model,
        args=trl_sft_config(config),
        train_dataset=to_dataset([window.sft_row() for window in splits.train]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback, *callbacks],
        completion_only_logits=config.completion_only_logits,
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resolve_resume(config.resume_from_checkpoint, config.output_dir))
    seconds = time.perf_counter() - started
    model_dir = output_dir / ("merged" if config.merge else "final")
    save_stage_model(trainer, tokenizer, config.model, config.dtype, model_dir, config.merge)
    return StageResult(
        output_dir=str(output_dir),
        model_dir=str(model_dir),
        global_step=trainer.state.global_step,
        steps_run=callback.steps_run,
        train_seconds=seconds,
        log_history=list(trainer.state.log_history),
        agreement=callback.last,
    )
