"""DAPO's dynamic sampling for TRL's ``GRPOTrainer``, through its public ``compute_loss`` and ``log``.

A group (the completions of one prompt) whose rewards are all equal has zero advantage everywhere: it
carries no policy-gradient signal, yet it dilutes the token normalisation and still feeds the KL and
entropy terms. DAPO (and Search-Gen-V's stage 2, ``algorithm.filter_groups``) drops such groups. Here they
are dropped from the loss: their completion tokens are masked out and the loss normaliser counts only
the kept tokens. Rows of one group are recognised by their identical prompt tokens; a group counts as flat
when all its rows in the micro-batch have the same advantage (exact when a micro-batch holds whole
groups: ``steps_per_generation: 1``).

Not done: DAPO also *refills*, generating more groups until the batch is full (up to 5 generation
batches in Search-Gen-V). TRL 1.16 generates once per generation batch inside a private method, so with
public extension points the dropped groups are not replaced within the step; a larger
``generation_batch_size`` gives more groups per step to keep from.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer


def drop_flat_groups(inputs: dict[str, Any], tolerance: float = 1e-6) -> tuple[dict[str, Any], int, int]:
    """``inputs`` with the completions of flat groups masked out; returns (inputs, kept groups, groups)."""
    prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"].bool()
    advantages = inputs["advantages"].reshape(len(prompt_ids), -1)[:, 0]
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, (ids, mask) in enumerate(zip(prompt_ids, prompt_mask, strict=True)):
        groups.setdefault(tuple(ids[mask].tolist()), []).append(row)
    keep = torch.zeros(len(prompt_ids), dtype=torch.bool, device=prompt_ids.device)
    kept = 0
    for rows in groups.values():
        values = advantages[rows]
        if float(values.max() - values.min()) > tolerance:
            keep[rows] = True
            kept += 1
    completion_mask = inputs["completion_mask"]
    masked = completion_mask * keep.unsqueeze(1).to(completion_mask.dtype)
    out = dict(inputs, completion_mask=masked)
    before = completion_mask.sum()
    if "num_items_in_batch" in inputs and before > 0:  # the loss normaliser: kept tokens only
        out["num_items_in_batch"] = inputs["num_items_in_batch"] * (masked.sum() / before)
    return out, kept, len(groups)


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose training loss leaves out groups without reward spread (DAPO's filter)."""

    def __init__(self, *args: Any, dynamic_sampling: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dynamic_sampling = dynamic_sampling
        self.group_counts = [0, 0]  # kept, seen since the last log

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.dynamic_sampling and model.training:
            inputs, kept, seen = drop_flat_groups(inputs)
            self.group_counts[0] += kept
            self.group_counts[1] += seen
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        kept, seen = self.group_counts
        if seen and "loss" in logs:
            logs["dynamic_sampling/kept_groups"] = kept / seen
            self.group_counts = [0, 0]
        super().log(logs, start_time)
