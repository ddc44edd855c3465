"""Logits and loss only at the completion positions: the LM head runs on the labelled tokens alone.

A verifier example is a ~600-token prompt followed by a ~20-token label list, and only the label tokens
carry loss. With a 262k-token vocabulary (Gemma 3) the LM head over every position dominates a training
step on CPU. TRL's fused LM head scores only the labelled positions when Triton is usable; elsewhere it
scores every position. :class:`CompletionOnlySFTTrainer` runs the decoder, gathers the hidden states whose
next token is labelled, and applies the LM head and the cross-entropy there only. The loss is the same
quantity (sum of token NLL over labelled tokens / token count), so it matches the default path.

This module imports torch and TRL at import time; import it lazily.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

logger = logging.getLogger(__name__)


@dataclass
class CompletionLoss:
    """Loss plus the token statistics the trainer logs (summed over the labelled positions)."""

    loss: torch.Tensor
    num_tokens: torch.Tensor
    entropy_sum: torch.Tensor
    num_correct: torch.Tensor


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(decoder, lm_head, text config) of a causal LM, looking through a PEFT wrapper.

    LoRA layers are injected into the base model's modules, so calling its decoder runs the adapters too.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), base.config.get_text_config()


def _scale_logits(logits: torch.Tensor, config: Any) -> torch.Tensor:
    """Apply the output scaling some families put between the LM head and the softmax."""
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def completion_only_loss(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None
) -> CompletionLoss:
    """Mean next-token NLL over positions whose label is not -100, computing logits only there."""
    decoder, lm_head, config = causal_lm_parts(model)
    forward_kwargs = {
        key: inputs[key]
        for key in ("input_ids", "attention_mask", "position_ids")
        if inputs.get(key) is not None
    }
    hidden = decoder(**forward_kwargs, use_cache=False).last_hidden_state
    labels = inputs["labels"][:, 1:].to(hidden.device)
    mask = labels != -100
    selected = hidden[:, :-1][mask]  # (n_labelled, hidden): the only rows the LM head sees
    targets = labels[mask]
    logits = _scale_logits(lm_head(selected), config).float()
    nll_sum = F.cross_entropy(logits, targets, reduction="sum")
    num_tokens = mask.sum()
    denominator = num_tokens if num_items_in_batch is None else num_items_in_batch
    loss = nll_sum / torch.as_tensor(denominator, device=nll_sum.device).clamp(min=1)
    with torch.no_grad():
        log_probs = torch.log_softmax(logits.detach(), dim=-1)
        entropy_sum = -(log_probs.exp() * log_probs).sum()
        num_correct = (logits.detach().argmax(dim=-1) == targets).sum()
    return CompletionLoss(loss=loss, num_tokens=num_tokens, entropy_sum=entropy_sum, num_correct=num_correct)


class CompletionOnlySFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose training loss computes logits only at the completion positions.

    ``completion_only_logits=False`` keeps TRL's own path (the reference for the loss-equality test).
    Several processes (DDP/FSDP/DeepSpeed) also keep TRL's path: they need the forward to go through the
    wrapped model, and on GPU TRL's Triton fused head already scores the labelled positions only. On our
    path the metrics TRL logs (entropy, token accuracy, token count) are kept here and added in ``log``.

    The decoder is called directly, outside the autocast a prepared model's forward applies: the loss is
    computed in the weights' own dtypes (a LoRA run over a bf16 base: bf16 base, fp32 adapters), as every
    recorded LoRA run trained. ``autocast_loss`` runs it under the trainer's autocast instead, which a model
    with float32 master weights beside frozen bf16 layers needs (``trainable_modules``).
    """

    def __init__(
        self, *args: Any, completion_only_logits: bool = True, autocast_loss: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.completion_only_logits = completion_only_logits
        self.autocast_loss = autocast_loss
        if completion_only_logits and self.accelerator.num_processes > 1:
            logger.warning("completion_only_logits is single-process only; using TRL's fused LM head instead")
            self.completion_only_logits = False
        self.completion_metrics: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        self.completion_train_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.completion_only_logits or return_outputs or self.args.loss_type != "nll":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        with self.accelerator.autocast() if self.autocast_loss else contextlib.nullcontext():
            result = completion_only_loss(model, inputs, num_items_in_batch)
        loss = result.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        # The same metrics TRL's compute_loss logs, from the logits we already have
        num_valid = int(result.num_tokens)
        metrics = self.completion_metrics[mode]
        metrics.setdefault("entropy", []).append(float(result.entropy_sum) / num_valid if num_valid else 0.0)
        metrics.setdefault("mean_token_accuracy", []).append(
            float(result.num_correct) / num_valid if num_valid else 0.0
        )
        if mode == "train" and "attention_mask" in inputs:
            self.completion_train_tokens += int(inputs["attention_mask"].sum())
        metrics["num_tokens"] = [float(self.completion_train_tokens)]
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add this path's metrics (averaged since the last log), then log as TRL does."""
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self.completion_metrics[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self.completion_metrics[mode] = {}
        super().log(logs, start_time)
