"""What the two training stages share: the composed config, model loading, data, saving.

A stage's config is three dataclasses: the toolkit's own options (data, windows, evaluation:
:class:`StageOptions` and the stage's subclass), TRL's :class:`~trl.ModelConfig` (model, dtype, PEFT/LoRA)
and TRL's trainer config (``SFTConfig`` or ``GRPOConfig``). A recipe section is one flat mapping whose keys
are the fields of any of the three, as in TRL's own YAML configs; every field is also a flag (TRL's
``HfArgumentParser``). Precedence: dataclass default < the stage's toolkit defaults < recipe < flag.
A stage run is: :func:`prepare_stage` (threads, data, output dir, seed, model), the TRL trainer, then
:func:`train_and_save` (save, merge).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from transformers import HfArgumentParser
from trl import ModelConfig

from rubric_pipeline.core.config import load_recipe, option
from rubric_pipeline.core.errors import ConfigError
from verifier.hardware import bf16_is_fast
from verifier.judge.hints import Hints, save_prompt_card
from verifier.judge.prompt import prompt_version
from verifier.train.data import WindowOptions, build_splits, read_labelled

logger = logging.getLogger(__name__)

O = TypeVar("O", bound="StageOptions")  # noqa: E741
A = TypeVar("A")


@dataclass
class StageOptions:
    """The toolkit's own fields, common to both stages (TRL's configs hold everything else)."""

    data: str = option("", help="labelled examples JSONL (teacher/human labels)")
    eval_data: str | None = option(None, help="held-out labelled JSONL; default: split `data` by question")
    eval_fraction: float = option(0.2, help="fraction of questions held out when eval_data is unset")
    window_min: int = option(1, help="smallest rubric window per prompt")
    window_max: int = option(10, help="largest rubric window per prompt")
    output_formats: list[str] = option(
        ["json"], help="output formats sampled per prompt (prompt.OUTPUT_FORMATS)"
    )
    reasoning_rate: float = option(0.0, help="fraction of prompts that ask for a <reasoning> block first")
    hints: Hints = option(
        "none",
        help="beside each rubric: none, words (the content words the response lacks) or evidence (the "
        "response sentence nearest it); verifier.judge.hints",
    )
    window_passes: int = option(
        1, help="cut every example into windows this many times, each pass with a new rubric order and cuts"
    )
    foreign_rubrics: int = option(0, help="add up to this many rubrics of other questions to each training "
                                  "window (within window_max), labelled not_support")  # fmt: skip
    max_train_windows: int | None = option(None, help="cap on training prompts (after windowing)")
    balance_labels: bool = option(
        False, help="sample the capped training prompts evenly over labels (each prompt's majority label)"
    )
    trainable_modules: str | None = option(
        None,
        help="full fine-tuning (use_peft false) of part of the model: train only the parameters whose name "
        "matches this regex (e.g. '.*layers\\.(9|1[0-7])\\..*'), freeze the rest; trained ones in float32",
    )
    average_tail: float = option(0.0, help="save the mean of the trained weights over this last fraction "
                                 "of the steps (e.g. 0.5) instead of the last step's (0)")  # fmt: skip
    merge: bool = option(True, help="write a merged plain model to output_dir/merged")
    num_threads: int | None = option(None, help="torch CPU threads (default: torch's)")

    def __post_init__(self) -> None:
        if self.foreign_rubrics < 0 or not 0.0 <= self.average_tail <= 1.0:
            raise ValueError("need foreign_rubrics >= 0 and average_tail in [0, 1]")


@dataclass
class ModelArgs(ModelConfig):
    """TRL's ``ModelConfig``; ``--model`` is short for ``--model_name_or_path``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "model directory to start from (or hub id)", "aliases": ["--model"]}
    )


# Where the toolkit's defaults differ from TRL's, for both stages (each stage adds its own)
COMMON_DEFAULTS: dict[str, Any] = {
    "dtype": "auto",  # the checkpoint's dtype (TRL: float32)
    "lora_target_modules": "all-linear",
    "lora_dropout": 0.0,
    "activation_checkpointing": False,  # faster on small models; recipes for big ones turn it on
    "report_to": "none",
    "dataloader_num_workers": 0,
    "per_device_train_batch_size": 4,
}


@dataclass
class StageSpec(Generic[O]):
    """One training stage: its options class, TRL trainer config class and toolkit defaults."""

    name: str
    options: type[O]
    training: type
    defaults: dict[str, Any]

    def classes(self) -> list[type]:
        return [self.options, ModelArgs, self.training]

    def parser(self, **kwargs: Any) -> HfArgumentParser:
        return HfArgumentParser(self.classes(), **kwargs)

    def field_names(self) -> set[str]:
        return {f.name for cls in self.classes() for f in dataclasses.fields(cls) if f.init}


@dataclass
class StageConfig(Generic[O, A]):
    """A resolved stage config: the toolkit's options, TRL's model config, TRL's trainer config."""

    options: O
    model: ModelArgs
    training: A

    def window_options(self) -> WindowOptions:
        o = self.options
        return WindowOptions(
            o.window_min,
            o.window_max,
            tuple(o.output_formats),
            o.reasoning_rate,
            True,
            self.training.seed,
            o.hints,
            o.window_passes,
            o.foreign_rubrics,
        )

    @property
    def autocast_loss(self) -> bool:
        """Whether the loss and the held-out evaluations run under the trainer's mixed-precision autocast:
        for ``trainable_modules`` runs, whose float32 layers sit beside frozen bf16 ones; LoRA and plain
        runs compute in the weights' own dtypes."""
        return bool(self.options.trainable_modules)

    def peft_config(self):
        """The LoRA config from the model config (TRL's ``get_peft_config``), or None for full weights."""
        from trl import get_peft_config

        return get_peft_config(self.model)

    def to_dict(self) -> dict[str, Any]:
        """One flat mapping, as a recipe section writes it."""
        return dataclasses.asdict(self.options) | dataclasses.asdict(self.model) | self.training.to_dict()


def _device_defaults() -> dict[str, bool]:
    """bf16 autocast where it is fast (~2x on AVX512-BF16 CPUs, a naive GEMM on AVX2-only ones); on a
    machine without a GPU, transformers accepts bf16 only with ``use_cpu``."""
    import torch

    return {"bf16": bf16_is_fast(), "use_cpu": not torch.cuda.is_available()}


def build_stage_config(
    spec: StageSpec,
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> StageConfig:
    """The stage config from the toolkit's defaults, a recipe's ``spec.name`` section, then ``overrides``."""
    data = recipe if isinstance(recipe, dict) else load_recipe(recipe)
    section = dict(data.get(spec.name) or {})
    where = f"section {spec.name!r} of {recipe if not isinstance(recipe, dict) else 'the recipe'}"
    known = spec.field_names()
    for what, values in ((where, section), ("overrides", overrides or {})):
        unknown = sorted(set(values) - known)
        if unknown:
            hints = {key: difflib.get_close_matches(key, known, n=2) for key in unknown}
            raise ConfigError(
                f"{what}: unknown option(s) {unknown} for stage {spec.name} "
                f"(the toolkit's {spec.options.__name__}, TRL's ModelConfig or {spec.training.__name__}); "
                f"close matches: {hints}"
            )
    values = _device_defaults() | COMMON_DEFAULTS | spec.defaults | section | dict(overrides or {})
    # As TRL's own parser does with a YAML config: the values become the parser's defaults, so a string from
    # YAML (``1e-5``) is converted by the field's type exactly as the same flag would be
    parser = spec.parser(exit_on_error=False)
    parser.set_defaults(**values)
    try:
        options, model, training = parser.parse_args_into_dataclasses(args=[])
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:  # TRL's / transformers' own checks (bf16 without a GPU, batch divisibility)
        raise ConfigError(f"stage {spec.name}: {exc}") from None
    return StageConfig(options=options, model=model, training=training)


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


def load_model_and_tokenizer(
    model_path: str, dtype: str | None = "auto", model_args: ModelConfig | None = None
):
    """Tokenizer (pad token set) and causal LM, loaded as TRL's scripts do from a ``ModelConfig``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {}
    if model_args is not None:
        dtype = model_args.dtype
        kwargs = {"revision": model_args.model_revision}
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        quantization = get_quantization_config(model_args)
        if quantization is not None:
            kwargs["quantization_config"] = quantization  # load_in_4bit / load_in_8bit (bitsandbytes)
    torch_dtype = dtype if dtype in (None, "auto") else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=kwargs.get("revision"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, **kwargs)
    return model, tokenizer


def prepare_stage(config: StageConfig, stage: str, splits=None, **split_options: Any):
    """Threads, the training splits (from ``options.data`` unless given), output dir, seed, the model.

    Returns ``(splits, model, tokenizer)``. ``split_options`` go to ``build_splits`` (augmentation rate,
    eval cap: what differs between the stages).
    """
    import torch
    from transformers import set_seed

    options, args = config.options, config.training
    if options.num_threads:
        torch.set_num_threads(options.num_threads)
    if not config.model.model_name_or_path:
        raise ConfigError(f"{stage}: --model is required (a model directory)")
    if splits is None:
        if not options.data:
            raise ConfigError(f"{stage}: --data is required (a labelled JSONL file)")
        eval_examples = read_labelled(options.eval_data) if options.eval_data else None
        splits = build_splits(
            read_labelled(options.data),
            config.window_options(),
            eval_examples=eval_examples,
            eval_fraction=options.eval_fraction,
            max_train_windows=options.max_train_windows,
            balance_labels=options.balance_labels,
            **split_options,
        )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "stage_config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    set_seed(args.seed)  # before PEFT creates the adapter inside the trainer: same init for the same seed
    model_args = config.model
    if model_args.use_peft and args.bf16 and model_args.dtype == "float32":
        # A frozen base under bf16 autocast multiplies in bf16 anyway: loaded in bf16 it skips the casts of
        # its fp32 weights every step (LoRA steps 1.47x faster on an AVX512-BF16 CPU, same losses to three
        # decimals); the adapters PEFT trains stay fp32. Without fast bf16 (no autocast) nothing changes.
        model_args = dataclasses.replace(model_args, dtype="bfloat16")
        logger.info("LoRA over a frozen base with bf16 autocast: base weights loaded in bfloat16")
    model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args=model_args)
    if options.trainable_modules:
        if model_args.use_peft:
            raise ConfigError(f"{stage}: trainable_modules is for full fine-tuning; set use_peft false")
        freeze_all_but(model, options.trainable_modules, float32_trained=args.bf16 or args.fp16)
    return splits, model, tokenizer


def freeze_all_but(model, pattern: str, float32_trained: bool = False) -> int:
    """Train only the parameters whose full name matches ``pattern``: the others stop needing gradients
    (backpropagation stops below the lowest trained layer). With ``float32_trained`` (training under
    mixed-precision autocast, which runs the matmuls in half precision) the trained ones get float32 master
    weights whatever the checkpoint's dtype, while the frozen rest stays as loaded (the saved model is
    written in the loaded dtype).
    Returns how many parameters train; a pattern that matches none is an error."""
    import torch

    regex = re.compile(pattern)
    trained = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(bool(regex.fullmatch(name)))
        if parameter.requires_grad:
            trained += parameter.numel()
            if float32_trained and parameter.dtype in (torch.bfloat16, torch.float16):
                parameter.data = parameter.data.float()
    if not trained:
        raise ConfigError(f"trainable_modules {pattern!r} matches no parameter of the model")
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "training %d of %d parameters (%.1f%%) matching %r", trained, total, 100 * trained / total, pattern
    )
    return trained


def training_autocast(args, model, enabled: bool = True):
    """The mixed-precision autocast (``bf16`` / ``fp16``) of a run whose loss is computed under it
    (:attr:`StageConfig.autocast_loss`), for passes made outside the trainer, such as held-out evaluations
    in a callback; a no-op when not ``enabled`` or for full-precision runs."""
    import torch

    device = next(model.parameters()).device.type
    dtype = torch.float16 if args.fp16 else torch.bfloat16
    return torch.autocast(device, dtype=dtype, enabled=enabled and bool(args.bf16 or args.fp16))


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
    """Train (resuming if asked: a checkpoint dir, or ``latest`` in output_dir), then write the log history
    (``log_history.json``) and the model; returns (model dir, training seconds)."""
    import torch

    args = config.training
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resolve_resume(args.resume_from_checkpoint, args.output_dir))
    seconds = time.perf_counter() - started
    if trainer.accelerator.is_main_process:  # losses, rewards, token counts and runtime, for scripts to read
        history = json.dumps(trainer.state.log_history, indent=1, default=str)
        (Path(args.output_dir) / "log_history.json").write_text(history + "\n")
    model_dir = Path(args.output_dir) / ("merged" if config.options.merge else "final")
    loaded = getattr(
        trainer.model.config, "dtype", None
    )  # a torch.dtype, or its name once the trainer set it
    if config.options.trainable_modules and loaded is not None:  # float32 master weights back to that dtype
        trainer.model.to(getattr(torch, loaded) if isinstance(loaded, str) else loaded)
    save_stage_model(trainer, tokenizer, config.model, model_dir, config.options.merge)
    if trainer.accelerator.is_main_process:
        hints = config.options.hints
        save_prompt_card(model_dir, hints, prompt_version(hints))
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


def save_stage_model(trainer, tokenizer, model_args: ModelConfig, out_dir: Path, merge: bool) -> Path:
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

        base, _ = load_model_and_tokenizer(model_args.model_name_or_path, model_args=model_args)
        save_merged(PeftModel.from_pretrained(base, str(adapter_dir)), tokenizer, out_dir)
    trainer.accelerator.wait_for_everyone()
    return out_dir
