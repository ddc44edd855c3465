"""Iterate averaging over the end of training (stochastic weight averaging, Izmailov et al., 2018).

At a constant learning rate the weights of the last step are one draw from the region SGD wanders in: on a
small, skewed label mix a few batches move the label prior far (the demo's held-out monitor swings from all
``not_support`` to mostly ``support`` within 20 steps), so which side the run stops on is chance. With
``average_tail`` set, the trained parameters are averaged over the last fraction of optimizer steps and the
average replaces the final weights before they are saved and merged. Only parameters that train are
averaged (LoRA adapters, or the float32 masters of ``trainable_modules``), in float32.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


def tail_average_callbacks(fraction: float) -> list:
    """The averaging callback for ``average_tail`` (none for 0), to put first in a trainer's list so that
    the callbacks after it see the averaged weights at the end of training."""
    return [tail_average_callback(fraction)] if fraction else []


def tail_average_callback(fraction: float):
    """A ``TrainerCallback`` that averages the trainable parameters over the last ``fraction`` of steps and
    writes the average into the model when training ends (before any later callback's ``on_train_end``)."""
    import torch
    from torch.optim.swa_utils import get_swa_multi_avg_fn
    from transformers import TrainerCallback

    class TailAverageCallback(TrainerCallback):
        def __init__(self) -> None:
            self.update = get_swa_multi_avg_fn()
            self.averaged: list[torch.Tensor] | None = None
            self.count = 0
            self.first_step = 1

        @staticmethod
        def trained(model) -> list[torch.nn.Parameter]:
            return [param for param in model.parameters() if param.requires_grad]

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = max(1, state.max_steps - math.ceil(state.max_steps * fraction) + 1)
            self.averaged, self.count = None, 0

        @torch.no_grad()
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step < self.first_step:
                return
            current = [param.detach().float() for param in self.trained(model)]
            if self.averaged is None:
                self.averaged = [tensor.clone() for tensor in current]
            else:
                self.update(self.averaged, current, self.count)
            self.count += 1

        @torch.no_grad()
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if self.averaged is None:
                logger.warning(
                    "average_tail: training stopped at step %d, before the averaged tail (from step %d): "
                    "the last step's weights are kept",
                    state.global_step,
                    self.first_step,
                )
                return
            for param, mean in zip(self.trained(model), self.averaged, strict=True):
                param.copy_(mean.to(param.dtype))
            logger.info(
                "average_tail: final weights = mean of the trained parameters over %d steps (%d-%d)",
                self.count,
                self.first_step,
                state.global_step,
            )

    return TailAverageCallback()
