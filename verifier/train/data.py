"""Labelled examples -> chat-format training rows for stage 1 (SFT) and stage 2 (GRPO).

Every row goes through :mod:`verifier.judge.prompt`, the same contract the served verifier sees. An example's
rubrics are cut into windows of a sampled size (1..10 by default), each window becomes one prompt; the
requested output format is sampled per window when several are configured (as Search-Gen-V trains on
csv, yaml, xml, ...). Master-key augmentation (examples whose ``label_source`` starts with ``augment:``)
is mixed in at a set rate. The split is by question: no qid is in both train and eval.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import AUGMENT_PREFIX, Label, LabelledExample
from verifier.data.labelled_io import read_labelled_input
from verifier.judge.hints import Hints
from verifier.judge.prompt import OUTPUT_FORMATS, format_labels, render_messages, window_slices

logger = logging.getLogger(__name__)


@dataclass
class WindowOptions:
    """How examples become prompts (shared by the SFT and RL stage configs)."""

    window_min: int = 1
    window_max: int = 10
    output_formats: Sequence[str] = ("json",)
    reasoning_rate: float = 0.0
    shuffle_rubrics: bool = True
    seed: int = 0
    hints: Hints = "none"
    passes: int = 1  # each example is windowed this many times, each pass with its own rubric order and cuts
    foreign_rubrics: int = 0  # rubrics of other questions added to each window (not_support), room permitting


@dataclass
class Window:
    """One prompt: a question, a response and a window of rubrics with their teacher labels."""

    qid: str
    response_id: str
    question: str
    response: str
    rubric_texts: list[str]
    labels: list[str]
    output_format: str = "json"
    reasoning: bool = False
    hints: Hints = "none"
    label_source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        return render_messages(
            self.question,
            self.response,
            self.rubric_texts,
            output_format=self.output_format,
            reasoning=self.reasoning,
            hints=self.hints,
        )

    def target(self) -> str:
        return format_labels(self.labels, self.output_format)

    def sft_row(self) -> dict[str, Any]:
        """TRL conversational prompt-completion row (loss on the completion only)."""
        return {"prompt": self.messages(), "completion": [{"role": "assistant", "content": self.target()}]}

    def grpo_row(self) -> dict[str, Any]:
        """TRL GRPO row: the prompt plus the columns the reward reads."""
        return {
            "prompt": self.messages(),
            "teacher_labels": list(self.labels),
            "output_format": self.output_format,
            "reasoning": self.reasoning,
            "qid": self.qid,
        }


def read_labelled(path: str | Path, split: str = "train") -> list[LabelledExample]:
    """Labelled examples from JSONL (ours or TREC) or a ``datasets`` dir, as ``augment`` reads them."""
    return read_labelled_input(path, split)


def is_augmented(example: LabelledExample) -> bool:
    return example.label_source.startswith(AUGMENT_PREFIX)


def split_by_question(
    examples: Sequence[LabelledExample], eval_fraction: float, seed: int = 0
) -> tuple[list[LabelledExample], list[LabelledExample]]:
    """Hold out a fraction of the questions (all their responses, augmentations included)."""
    qids = sorted({example.qid for example in examples})
    random.Random(seed).shuffle(qids)
    n_eval = round(len(qids) * eval_fraction)
    if eval_fraction > 0 and len(qids) > 1:
        n_eval = min(max(n_eval, 1), len(qids) - 1)
    eval_qids = set(qids[:n_eval])
    train = [example for example in examples if example.qid not in eval_qids]
    held_out = [example for example in examples if example.qid in eval_qids]
    overlap = {example.qid for example in train} & {example.qid for example in held_out}
    assert not overlap, f"questions in both train and eval: {sorted(overlap)[:5]}"
    return train, held_out


def mix_augmentation(
    examples: Sequence[LabelledExample], augment_rate: float, seed: int = 0
) -> list[LabelledExample]:
    """Keep every plain example and add augmented ones: ``augment_rate`` of them per plain example."""
    plain = [example for example in examples if not is_augmented(example)]
    augmented = [example for example in examples if is_augmented(example)]
    wanted = round(len(plain) * augment_rate)
    if wanted > len(augmented):
        logger.warning(
            "augment_rate %.2f wants %d augmented examples, only %d exist",
            augment_rate,
            wanted,
            len(augmented),
        )
    rng = random.Random(seed)
    chosen = rng.sample(augmented, min(wanted, len(augmented)))
    mixed = plain + chosen
    rng.shuffle(mixed)
    return mixed


class ForeignRubrics:
    """Rubrics of other questions, to mix into a window labelled ``not_support``.

    Windows cut from one response often carry one label throughout (a complete answer: all ``support``; a
    master key: all ``not_support``), so a model can learn to decide the first label and copy it down the
    list. A few rubrics about other questions, at random places, give such windows mixed labels whose
    truth is certain: each line has to be judged on its own.
    """

    def __init__(self, examples: Sequence[LabelledExample]) -> None:
        seen = {(example.qid, rubric.text) for example in examples for rubric in example.rubrics}
        self.pool = sorted(seen)
        if len({qid for qid, _ in self.pool}) < 2:
            raise ConfigError("foreign_rubrics needs the rubrics of at least two questions")

    def mix_into(
        self, chunk: list[tuple[str, str]], qid: str, count: int, rng: random.Random
    ) -> list[tuple[str, str]]:
        """``chunk`` with up to ``count`` rubrics of questions other than ``qid`` inserted at random places
        (fewer when a bounded number of draws finds no more)."""
        mixed, taken = list(chunk), {text for text, _ in chunk}
        for _ in range(20 * count):
            if count == 0:
                break
            other_qid, text = rng.choice(self.pool)
            if other_qid == qid or text in taken:
                continue
            mixed.insert(rng.randint(0, len(mixed)), (text, Label.NOT_SUPPORT.value))
            taken.add(text)
            count -= 1
        return mixed


def make_windows(examples: Sequence[LabelledExample], options: WindowOptions) -> list[Window]:
    """Cut each example's rubrics into windows of sampled size; each window samples its output format.
    With ``passes`` > 1 every example is cut again (a new rubric order, new sizes): more varied prompts than
    an epoch that repeats the same ones."""
    if options.passes < 1:
        raise ConfigError(f"window passes must be >= 1, got {options.passes}")
    if not 1 <= options.window_min <= options.window_max:
        raise ConfigError(
            f"need 1 <= window_min <= window_max, got {options.window_min}..{options.window_max}"
        )
    unknown = sorted(set(options.output_formats) - set(OUTPUT_FORMATS))
    if unknown or not options.output_formats:
        raise ConfigError(f"unknown output formats {unknown}; known: {list(OUTPUT_FORMATS)}")
    rng = random.Random(options.seed)
    foreign = ForeignRubrics(examples) if options.foreign_rubrics else None
    windows: list[Window] = []
    for example in [example for _ in range(options.passes) for example in examples]:
        pairs = [(rubric.text, label) for rubric, label in zip(example.rubrics, example.labels, strict=True)]
        if options.shuffle_rubrics:
            rng.shuffle(pairs)
        for part in window_slices(len(pairs), options.window_min, max_size=options.window_max, rng=rng):
            chunk = pairs[part]
            if foreign is not None:
                room = min(options.foreign_rubrics, options.window_max - len(chunk))
                chunk = foreign.mix_into(chunk, example.qid, room, rng)
            windows.append(
                Window(
                    qid=example.qid,
                    response_id=example.response_id,
                    question=example.question,
                    response=example.response,
                    rubric_texts=[text for text, _ in chunk],
                    labels=[label for _, label in chunk],
                    output_format=rng.choice(list(options.output_formats)),
                    reasoning=rng.random() < options.reasoning_rate,
                    hints=options.hints,
                    label_source=example.label_source,
                )
            )
    return windows


def sample_windows(
    windows: list[Window], n: int, rng: random.Random, balance_labels: bool = False
) -> list[Window]:
    """``n`` of ``windows`` at random; with ``balance_labels`` spread evenly over each window's majority
    label (a rare label gives all it has, the others share the rest): with one-rubric windows, training
    sees partial_support as often as the common labels, and calibration restores the prior."""
    if len(windows) <= n:
        return list(windows)
    if not balance_labels:
        return rng.sample(windows, n)
    by_label: dict[str, list[Window]] = {}
    for window in windows:
        by_label.setdefault(Counter(window.labels).most_common(1)[0][0], []).append(window)
    pools = sorted(by_label.values(), key=len)
    chosen: list[Window] = []
    for index, pool in enumerate(pools):
        share = (n - len(chosen)) // (len(pools) - index)
        chosen += rng.sample(pool, min(share, len(pool)))
    rng.shuffle(chosen)
    return chosen


@dataclass
class TrainingSplits:
    train: list[Window]
    eval: list[Window]

    def summary(self) -> dict[str, int]:
        return {
            "train_windows": len(self.train),
            "eval_windows": len(self.eval),
            "train_questions": len({w.qid for w in self.train}),
            "eval_questions": len({w.qid for w in self.eval}),
            "train_augmented": sum(w.label_source.startswith(AUGMENT_PREFIX) for w in self.train),
        }


def build_splits(
    examples: Sequence[LabelledExample],
    options: WindowOptions,
    *,
    eval_examples: Sequence[LabelledExample] | None = None,
    eval_fraction: float = 0.2,
    augment_rate: float = 0.0,
    max_train_windows: int | None = None,
    max_eval_windows: int | None = None,
    balance_labels: bool = False,
) -> TrainingSplits:
    """Split by question (unless an eval set is given), mix augmentation into train, cut windows, keep at
    most ``max_train_windows`` (label-balanced with ``balance_labels``)."""
    if eval_examples is None:
        train_examples, eval_examples = split_by_question(examples, eval_fraction, options.seed)
    else:
        train_examples = list(examples)
        overlap = {e.qid for e in train_examples} & {e.qid for e in eval_examples}
        if overlap:
            raise ConfigError(f"eval set shares questions with train: {sorted(overlap)[:5]}")
    train_examples = mix_augmentation(train_examples, augment_rate, options.seed)
    # Eval measures agreement on real responses: augmented ones are judged by the master-key metric
    eval_plain = [e for e in eval_examples if not is_augmented(e)]
    train = make_windows(train_examples, options)
    held_out = make_windows(
        eval_plain, dataclasses.replace(options, seed=options.seed + 1, passes=1, foreign_rubrics=0)
    )
    if max_train_windows is not None:
        train = sample_windows(train, max_train_windows, random.Random(options.seed), balance_labels)
    if max_eval_windows is not None and len(held_out) > max_eval_windows:
        # a generator of its own: the held-out sample does not move with the training cap or balance
        held_out = random.Random(options.seed + 1).sample(held_out, max_eval_windows)
    splits = TrainingSplits(train=train, eval=held_out)
    assert not ({w.qid for w in splits.train} & {w.qid for w in splits.eval}), (
        "a question is in train and eval"
    )
    logger.info("training data: %s", splits.summary())
    return splits


def to_dataset(rows: list[dict[str, Any]]):
    """Rows -> ``datasets.Dataset`` (imported lazily)."""
    from datasets import Dataset

    if not rows:
        raise ConfigError("no training rows: check the labelled data and the window settings")
    return Dataset.from_list(rows)
