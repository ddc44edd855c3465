"""DAPO's dynamic sampling for TRL's ``GRPOTrainer``, filter and refill, through public extension points.

Filter (``dynamic_sampling``). A group (the completions of one prompt) whose rewards are all equal has zero
advantage everywhere: it carries no policy-gradient signal, yet it dilutes the token normalisation and still
feeds the KL and entropy terms. DAPO (and Search-Gen-V's stage 2, ``algorithm.filter_groups``) drops such
groups. Here they are dropped from the loss in ``compute_loss``: their completion tokens are masked out and
the loss normaliser counts only the kept tokens. Rows of one group are recognised by their identical prompt
tokens; a group counts as flat when all its rows in the micro-batch have the same advantage (exact when a
micro-batch holds whole groups: ``steps_per_generation: 1``).

Refill (``max_num_gen_batches > 1``). DAPO also keeps generating until the batch holds enough groups with
spread: verl draws further generation batches of *new* prompts, keeps their groups with spread, and stops at
``train_batch_size`` groups or after ``max_num_gen_batches`` batches (Search-Gen-V: 5). TRL 1.16 generates in
private methods, but its documented ``rollout_func`` argument replaces the generation call: it receives the
batch's prompts (each repeated ``num_generations`` times) and the trainer, and returns every row's
``prompt_ids``, ``completion_ids`` and ``logprobs``; any other returned field is written into the row that
TRL's reward functions read. :meth:`DynamicSamplingGRPOTrainer.refill_rollout` generates each group with the
trainer's model and ``generation_config`` (as TRL does without vLLM), scores it with the trainer's reward
functions, and while groups are flat draws a further batch of training prompts (at most
``max_num_gen_batches`` batches in all); each new group with spread replaces a flat one, its dataset columns
(teacher labels, format) returned with it, so TRL's own reward, advantage, loss and logs see the refilled
batch. Groups still flat after the last batch stay and the filter masks them (verl raises instead). The raw
rows of the batch come from the public ``training_step`` (``rollout_func`` gets only their prompts).

What TRL's contract leaves out: the ``prompts`` list given to reward functions and the completions log is
built before the rollout, so refilled rows show their slot's original prompt there (a reward must read its
columns, as the project's does); refill prompts are drawn from the training set in a seeded order of the
refill's own (TRL's sampler cannot be advanced from outside), not from the epoch's next batches; and refill
generates with ``transformers`` only: vLLM, tools, environments, reward models and async reward functions
are refused.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import ProcessorMixin
from trl import GRPOTrainer
from trl.chat_template_utils import parse_response
from trl.data_utils import is_conversational
from trl.distributed import DistributedBackend
from trl.models import unwrap_model_for_generation

TOLERANCE = 1e-6
# Row fields TRL reads itself, or that would collide with the rollout's own keys: not returned as columns
_NOT_COLUMNS = {"prompt", "image", "images", "prompt_ids", "completion_ids", "logprobs", "env_mask"}


def drop_flat_groups(inputs: dict[str, Any], tolerance: float = TOLERANCE) -> tuple[dict[str, Any], int, int]:
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


def has_spread(rewards: Sequence[float], tolerance: float = TOLERANCE) -> bool:
    """Whether a group's scorable rewards differ (NaN: every reward function returned None, as in TRL)."""
    values = [value for value in rewards if value == value]
    return len(values) > 1 and max(values) - min(values) > tolerance


def _ignore(*args: Any, **kwargs: Any) -> None:
    """Stands in for TRL's ``log_extra`` / ``log_metric`` reward kwargs while the refill scores."""


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with DAPO's dynamic sampling: flat groups leave the loss; with ``max_num_gen_batches``
    above 1 they are first replaced by new prompts' groups with spread."""

    def __init__(
        self, *args: Any, dynamic_sampling: bool = True, max_num_gen_batches: int = 1, **kwargs: Any
    ) -> None:
        if max_num_gen_batches < 1:
            raise ValueError(f"max_num_gen_batches must be at least 1, got {max_num_gen_batches}")
        if max_num_gen_batches > 1:
            if not dynamic_sampling:
                raise ValueError("max_num_gen_batches > 1 (refill) is part of dynamic_sampling: turn it on")
            if kwargs.get("rollout_func") is not None:
                raise ValueError("the refill is a rollout_func: it cannot be combined with another one")
            kwargs["rollout_func"] = self.refill_rollout  # TRL passes (prompts, trainer); trainer is self
        super().__init__(*args, **kwargs)
        self.dynamic_sampling = dynamic_sampling
        self.max_num_gen_batches = max_num_gen_batches
        self.group_counts = [0, 0]  # kept, seen since the last log
        self.refill_counts = [0, 0]  # groups replaced, groups generated for since the last log
        self.gen_batches: list[int] = []  # generation batches drawn per generation since the last log
        self.generation_rows: list[dict[str, Any]] | None = None
        self._refill_queue: list[int] = []
        self._refill_rng = random.Random(self.args.seed + self.accelerator.process_index)
        if max_num_gen_batches > 1:
            self._check_refill_supported()

    def _check_refill_supported(self) -> None:
        problems = {
            "use_vllm": self.use_vllm,
            "use_transformers_continuous_batching": self.use_transformers_continuous_batching,
            "tools": bool(self.tools),
            "environment_factory": self.environment_factories is not None,
            "a multimodal processor": isinstance(self.processing_class, ProcessorMixin),
            "an iterable train_dataset": not hasattr(self.train_dataset, "__len__"),
            "reward models or async reward functions": any(
                isinstance(func, nn.Module)
                or inspect.iscoroutinefunction(func)
                or inspect.iscoroutinefunction(type(func).__call__)
                for func in self.reward_funcs
            ),
        }
        found = [name for name, present in problems.items() if present]
        if found:
            raise ValueError(
                "max_num_gen_batches > 1 (refill) generates with transformers and scores with callable "
                f"reward functions; it does not support {found}"
            )

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The raw generation-batch rows: the refill scores their groups with their columns (teacher labels),
        # which TRL does not pass to a rollout_func
        self.generation_rows = inputs
        return super().training_step(model, inputs, num_items_in_batch)

    def refill_rollout(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, Any]:
        """TRL ``rollout_func``: the batch's groups, flat ones replaced by new prompts' groups with spread."""
        size = self.num_generations if self.model.training else self.num_generations_eval
        if len(prompts) % size or any(prompts[i] != prompts[i - i % size] for i in range(len(prompts))):
            raise ValueError(f"the refill needs whole groups of {size} rows on each process")
        prompt_ids = self.tokenize_prompts(prompts[::size])
        completion_ids = self.sample_groups(prompt_ids, size)
        if not self.model.training:  # evaluation: neither filter nor refill
            return self._rollout_output(prompt_ids, completion_ids, size, rows=None)
        rows = list(self.generation_rows or [])[::size]
        if [row["prompt"] for row in rows] != prompts[::size]:
            raise ValueError("the rollout's prompts are not those of the batch training_step received")
        flat = [
            i
            for i, rewards in enumerate(self.score_groups(rows, prompt_ids, completion_ids))
            if not has_spread(rewards)
        ]
        rounds, replaced = 1, 0
        while rounds < self.max_num_gen_batches and self._flat_anywhere(len(flat)):
            # verl draws a whole generation batch of new prompts per round, whatever the number still missing
            new_rows = self.refill_rows(len(rows), exclude=[row["prompt"] for row in rows])
            rounds += 1
            if not new_rows:
                continue  # every prompt of the training set is in this batch; other processes may still draw
            new_ids = self.tokenize_prompts([row["prompt"] for row in new_rows])
            new_completions = self.sample_groups(new_ids, size)
            for group, rewards in enumerate(self.score_groups(new_rows, new_ids, new_completions)):
                if flat and has_spread(rewards):
                    slot = flat.pop(0)
                    rows[slot], prompt_ids[slot] = new_rows[group], new_ids[group]
                    completion_ids[slot] = new_completions[group]
                    replaced += 1
        self.gen_batches.append(rounds)
        self.refill_counts[0] += replaced
        self.refill_counts[1] += len(rows)
        return self._rollout_output(prompt_ids, completion_ids, size, rows)

    def _flat_anywhere(self, flat: int) -> bool:
        # Every process must draw the same number of generation batches: generation can be collective (ZeRO-3)
        count = torch.tensor([flat], device=self.accelerator.device)
        return bool(self.accelerator.gather(count).sum() > 0)

    @staticmethod
    def _rollout_output(
        prompt_ids: list[list[int]],
        completion_ids: list[list[list[int]]],
        size: int,
        rows: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_ids": [list(ids) for ids in prompt_ids for _ in range(size)],
            "completion_ids": [ids for group in completion_ids for ids in group],
            "logprobs": None,  # TRL reads sampling logprobs only for vLLM's importance-sampling correction
        }
        columns = [key for key in rows[0] if key not in _NOT_COLUMNS] if rows else []
        for key in columns:  # TRL writes them into the rows its rewards read: a refilled row's own columns
            out[key] = [row[key] for row in rows for _ in range(size)]
        return out

    def refill_rows(self, count: int, exclude: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Up to ``count`` training rows in the refill's seeded order (a new permutation each pass), skipping
        the prompts in ``exclude`` (a second group of a prompt already in the batch would merge with it)."""
        rows: list[dict[str, Any]] = []
        size = len(self.train_dataset)
        for _ in range(2 * size):  # two passes at most: the first may start mid-permutation
            if len(rows) == count:
                break
            if not self._refill_queue:
                self._refill_queue = list(range(size))
                self._refill_rng.shuffle(self._refill_queue)
            row = self.train_dataset[self._refill_queue.pop()]
            if row["prompt"] not in exclude and all(row["prompt"] != kept["prompt"] for kept in rows):
                rows.append(row)
        return rows

    def tokenize_prompts(self, prompts: list[Any]) -> list[list[int]]:
        """Prompt token ids as TRL tokenizes text prompts (``_tokenize_prompts``)."""
        if is_conversational({"prompt": prompts[0]}):
            return self.processing_class.apply_chat_template(
                conversation=prompts,
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **self.chat_template_kwargs,
            )["input_ids"]
        return self.processing_class(text=prompts)["input_ids"]

    def sample_groups(self, prompt_ids: list[list[int]], size: int) -> list[list[list[int]]]:
        """``size`` completions of each prompt, as TRL samples them without vLLM (``_generate_single_turn``):
        left-padded ``generate`` with the trainer's ``generation_config``, cut after the first EOS."""
        repeated = [list(ids) for ids in prompt_ids for _ in range(size)]
        width = max(len(ids) for ids in repeated)
        pad = self.processing_class.pad_token_id
        device = self.accelerator.device
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in repeated], device=device)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in repeated], device=device
        )
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
            DistributedBackend(self.accelerator).summon_full_params(self.model_wrapped, recurse=False),
        ):
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=self.generation_config
            )
        eos = set(self.eos_token_ids)
        completions = []
        for tokens in output[:, width:].tolist():
            end = next((i + 1 for i, token in enumerate(tokens) if token in eos), len(tokens))
            completions.append(tokens[:end])
        return [completions[i : i + size] for i in range(0, len(completions), size)]

    def decode(
        self, prompts: list[Any], prompt_ids: list[list[int]], completion_ids: list[list[int]]
    ) -> list[Any]:
        """Completions in the form TRL hands them to reward functions (``_generate``)."""
        tokenizer = self.processing_class
        if not is_conversational({"prompt": prompts[0]}):
            return tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        if getattr(tokenizer, "response_template", None) is not None or getattr(
            tokenizer, "response_schema", None
        ):
            return [
                [parse_response(tokenizer, ids, prefix=prefix)]
                for ids, prefix in zip(completion_ids, prompt_ids, strict=True)
            ]
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return [[{"role": "assistant", "content": text}] for text in texts]

    def score_groups(
        self, rows: list[dict[str, Any]], prompt_ids: list[list[int]], completion_ids: list[list[list[int]]]
    ) -> list[list[float]]:
        """Per group, each completion's reward as TRL sums it: weighted, a None skipped, NaN when all are."""
        size = len(completion_ids[0])
        row_of = [row for row in rows for _ in range(size)]
        prompts = [row["prompt"] for row in row_of]
        ids = [completion for group in completion_ids for completion in group]
        completions = self.decode(prompts, [p for p in prompt_ids for _ in range(size)], ids)
        columns = {
            key: [row[key] for row in row_of] for key in rows[0] if key not in ("prompt", "completion")
        }
        total = torch.zeros(len(ids))
        scored = torch.zeros(len(ids), dtype=torch.bool)
        for func, weight in zip(self.reward_funcs, self.reward_weights.tolist(), strict=True):
            values = func(
                prompts=prompts,
                completions=completions,
                completion_ids=ids,
                trainer_state=self.state,
                log_extra=_ignore,
                log_metric=_ignore,
                **columns,
            )
            for i, value in enumerate(values):
                if value is not None and value == value:
                    total[i] += weight * value
                    scored[i] = True
        total[~scored] = float("nan")
        return total.view(-1, size).tolist()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.dynamic_sampling and model.training:
            inputs, kept, seen = drop_flat_groups(inputs)
            self.group_counts[0] += kept
            self.group_counts[1] += seen
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            kept, seen = self.group_counts
            if seen:
                logs["dynamic_sampling/kept_groups"] = kept / seen
                self.group_counts = [0, 0]
            if self.gen_batches:  # verl's train/num_gen_batches
                logs["dynamic_sampling/gen_batches"] = sum(self.gen_batches) / len(self.gen_batches)
                logs["dynamic_sampling/refilled_groups"] = self.refill_counts[0] / max(
                    self.refill_counts[1], 1
                )
                self.gen_batches, self.refill_counts = [], [0, 0]
        super().log(logs, start_time)
