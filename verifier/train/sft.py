"""Stage 1: supervised fine-tuning on teacher labels with TRL's ``SFTTrainer`` (LoRA or full).

The loss is on the completion (the label list) only; with ``completion_only_logits`` the LM head also
runs only there (:mod:`verifier.train.completion_lm`). A callback measures label agreement on held-out
questions by greedy generation every ``eval_steps``. The result is merged into a plain model directory
(weights + tokenizer) that vLLM serves.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trl import SFTConfig

from rubric_pipeline.core.config import option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import Label
from verifier.eval.metrics import macro_f1
from verifier.judge.prompt import ParseError, parse_labels
from verifier.train.completion_lm import CompletionOnlySFTTrainer, _scale_logits, causal_lm_parts
from verifier.train.data import Window, to_dataset
from verifier.train.stage import (
    StageConfig,
    StageOptions,
    StageResult,
    StageSpec,
    build_stage_config,
    prepare_stage,
    train_and_save,
    training_autocast,
)
from verifier.train.tail_average import tail_average_callbacks

logger = logging.getLogger(__name__)


@dataclass
class SFTOptions(StageOptions):
    """Stage 1's own fields (beside TRL's ``ModelConfig`` and ``SFTConfig``): data, windows, the eval."""

    data: str = option("", help="labelled examples JSONL (teacher/human labels, augment:* rows mixed in)")
    augment_rate: float = option(0.0, help="augmented (augment:*) examples mixed in per plain example")
    max_eval_windows: int | None = option(32, help="cap on held-out prompts for the agreement eval")
    completion_only_logits: bool = option(True, help="compute logits/loss only at completion positions")
    eval_mode: Literal["generate", "teacher_forced"] = option(
        "generate",
        help="held-out agreement every `eval_steps` (TRL's field; unset: at the end only). generate: greedy "
        "label lists (slow on CPU); teacher_forced: one forward pass per prompt, each label read from the "
        "logits after the gold labels before it",
    )
    eval_max_new_tokens: int = option(64, help="tokens generated per eval prompt")
    max_train_seconds: float | None = option(
        None,
        help="stop after this many seconds of training (evaluations left out), then save as usual: a "
        "time-to-quality budget (a constant learning rate suits it)",
    )


SFT = StageSpec(
    name="sft",
    options=SFTOptions,
    training=SFTConfig,
    defaults={
        "output_dir": "runs/sft",
        "use_peft": True,
        "learning_rate": 2e-4,
        "logging_steps": 5,
        "max_length": 2048,
        "save_total_limit": 2,
        "completion_only_loss": True,
        "disable_tqdm": False,
    },
)


def sft_config(recipe: str | Path | dict[str, Any] | None = None, **overrides: Any) -> StageConfig:
    """Stage 1's config: toolkit defaults, the recipe's ``sft`` section, then ``overrides`` (any field)."""
    return build_stage_config(SFT, recipe, overrides)


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
                    use_cache=True,  # trainers switch the config's KV cache off for training
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


def _label_spans(target: str, labels: list[str]) -> list[int] | None:
    """Character offset of each label in the formatted target, in order (None if one is missing)."""
    starts, cursor = [], 0
    for label in labels:
        found = target.find(label, cursor)
        if found < 0:
            return None
        starts.append(found)
        cursor = found + len(label)
    return starts


def _first_label_tokens(tokenizer, labels: list[str]) -> dict[str, dict[str, int]]:
    """First token id of each label, bare (``"support``) and after a space (``- support``)."""
    first = {
        prefix: {label: tokenizer.encode(prefix + label, add_special_tokens=False)[0] for label in labels}
        for prefix in ("", " ")
    }
    for prefix, ids in first.items():
        if len(set(ids.values())) != len(labels):
            raise ConfigError(f"labels share a first token after {prefix!r}: {ids}; use eval_mode generate")
    return first


def _locate_labels(tokenizer, window: Window, first: dict[str, dict[str, int]]):
    """Token ids of the conversation as training renders it, and (token index, prefix) of each label's
    first token; ``None`` for the labels when one does not start on a token boundary."""
    target = window.target()
    conversation = [*window.messages(), {"role": "assistant", "content": target}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    spans = _label_spans(target, window.labels)
    if spans is None or target not in text:
        return [], None  # not tokenized: the caller skips this window
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = encoded["input_ids"]
    base = text.rindex(target)
    token_at = {start: index for index, (start, _end) in enumerate(encoded["offset_mapping"])}
    located = []
    for start, label in zip(spans, window.labels, strict=True):
        index, prefix = token_at.get(base + start), ""
        if (index is None or ids[index] != first[""][label]) and text[base + start - 1] == " ":
            index, prefix = token_at.get(base + start - 1), " "
        if index is None or ids[index] != first[prefix][label]:
            return ids, None
        located.append((index, prefix))
    return ids, located


def teacher_forced_label_accuracy(model, tokenizer, windows: list[Window]) -> dict[str, Any]:
    """Share of rubric labels whose first token wins among the label vocabulary, given the gold prefix.

    One forward pass per prompt over the conversation as training renders it (no generation; the LM head
    only at the label positions): a cheap monitor of what greedy decoding would pick for each label when
    the labels before it are right. Beside the accuracy: the macro-F1 and how often each label was
    picked, so that a model drifting toward one label shows in the curve. Windows whose labels do not
    start on a token boundary are skipped and counted; with none left the accuracy is None, not 0.
    """
    import torch

    labels = [label.value for label in Label]
    first = _first_label_tokens(tokenizer, labels)
    decoder, lm_head, config = causal_lm_parts(model)
    was_training = model.training
    model.eval()
    gold_labels: list[str] = []
    picked: list[str] = []
    skipped = 0
    try:
        for window in windows:
            ids, located = _locate_labels(tokenizer, window, first)
            if not located:
                skipped += 1
                continue
            input_ids = torch.tensor([ids], device=model.device)
            with torch.no_grad():
                hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state[0]
                logits = _scale_logits(lm_head(hidden[[index - 1 for index, _ in located]]), config)
            for row, (_index, prefix), gold in zip(logits, located, window.labels, strict=True):
                candidates = [first[prefix][label] for label in labels]
                picked.append(labels[int(row[candidates].argmax())])
                gold_labels.append(gold)
    finally:
        model.train(was_training)
    if not picked:
        logger.warning("teacher-forced eval: no label located in %d prompts", len(windows))
    correct = sum(p == g for p, g in zip(picked, gold_labels, strict=True))
    return {
        "teacher_forced_label_accuracy": correct / len(picked) if picked else None,
        "teacher_forced_macro_f1": macro_f1(gold_labels, picked) if picked else None,
        "predicted": {label: picked.count(label) for label in labels},
        "skipped_prompts": skipped,
        "eval_prompts": len(windows),
    }


def _agreement_callback(windows: list[Window], tokenizer, config: StageConfig, log_path: Path):
    from transformers import TrainerCallback

    options, every = config.options, int(config.training.eval_steps or 0)
    batch_size = config.training.per_device_eval_batch_size

    class AgreementCallback(TrainerCallback):
        """Label agreement on held-out questions every ``eval_steps`` and at the end of training, with the
        training seconds so far (evaluation time left out): the points of a time-to-quality curve; stops
        training once ``max_train_seconds`` of it are spent."""

        def __init__(self) -> None:
            self.last: dict[str, float] | None = None
            self.steps_run = 0
            self.started = time.perf_counter()
            self.eval_seconds = 0.0

        def trained_seconds(self, now: float) -> float:
            """Seconds since training began at ``now`` (a ``perf_counter`` reading), evaluations left out."""
            return now - self.started - self.eval_seconds

        def _evaluate(self, state, model) -> None:
            began = time.perf_counter()
            with training_autocast(config.training, model, enabled=config.autocast_loss):
                if options.eval_mode == "teacher_forced":
                    metrics = teacher_forced_label_accuracy(model, tokenizer, windows)
                else:
                    metrics = label_agreement(
                        model, tokenizer, windows, options.eval_max_new_tokens, batch_size
                    )
            metrics["step"] = state.global_step
            metrics["train_seconds"] = round(self.trained_seconds(began), 1)
            self.eval_seconds += time.perf_counter() - began
            self.last = metrics
            state.log_history.append(
                {f"eval_{k}": v for k, v in metrics.items()} | {"step": state.global_step}
            )
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
            logger.info("held-out label agreement at step %d: %s", state.global_step, metrics)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.started, self.eval_seconds = time.perf_counter(), 0.0
            if every and windows and state.global_step == 0:  # the starting point
                self._evaluate(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.steps_run += 1
            if every and windows and state.global_step % every == 0:
                self._evaluate(state, model)
            budget = options.max_train_seconds
            if budget is not None and self.trained_seconds(time.perf_counter()) >= budget:
                logger.info("training budget of %.0f s spent at step %d", budget, state.global_step)
                control.should_training_stop = True

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if windows and (self.last is None or self.last["step"] != state.global_step):
                self._evaluate(state, model)

    return AgreementCallback()


def run_sft(config: StageConfig, splits=None, callbacks: tuple = ()) -> StageResult:
    """Train stage 1 (on ``splits`` if given, else on ``config.data``) and return where the model is."""
    options = config.options
    splits, model, tokenizer = prepare_stage(
        config, "sft", splits, augment_rate=options.augment_rate, max_eval_windows=options.max_eval_windows
    )
    log_path = Path(config.training.output_dir) / "agreement.jsonl"
    callback = _agreement_callback(splits.eval, tokenizer, config, log_path)
    trainer = CompletionOnlySFTTrainer(
        model=model,
        args=config.training,
        train_dataset=to_dataset([window.sft_row() for window in splits.train]),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
        callbacks=[*tail_average_callbacks(options.average_tail), callback, *callbacks],
        completion_only_logits=options.completion_only_logits,
        autocast_loss=config.autocast_loss,
    )
    model_dir, seconds = train_and_save(trainer, tokenizer, config)
    return StageResult(
        output_dir=config.training.output_dir,
        model_dir=str(model_dir),
        global_step=trainer.state.global_step,
        steps_run=callback.steps_run,
        train_seconds=seconds,
        log_history=list(trainer.state.log_history),
        agreement=callback.last,
    )
