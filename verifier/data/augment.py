"""Master-key adversarial negatives and rubric-window regrouping (``rubric-verifier augment``).

After "One Token to Fool LLM-as-a-Judge": responses that say nothing (punctuation, reasoning openers,
openers in other languages, a real response cut to its first sentence) must get ``not_support`` on every
rubric. Families listed in ``heldout_families`` go to a separate ``heldout_keys`` split, never to
``train``, so evaluation measures whether the verifier generalises to keys it never saw. Regrouping
(Search-Gen-V) reshuffles one response's rubrics into new windows of 1-10 with their labels carried along.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rubric_pipeline.core.config import add_config_arguments, build_config, config_hash, option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import (
    AUGMENT_PREFIX,
    Label,
    LabelledExample,
    labelled_features,
    write_jsonl,
)
from verifier.data.labelled_io import read_labelled_input

logger = logging.getLogger(__name__)

MASTER_KEYS: dict[str, tuple[str, ...]] = {
    "punctuation": (" ", ".", ",", ":"),
    "reasoning-opener": ("Thought process:", "Let's solve this problem step by step.", "Solution"),
    "multilingual": ("解", "かいせつ", "Respuesta"),
}
TRUNCATION = "truncation"
REGROUP = "regroup"
FAMILIES: tuple[str, ...] = (*MASTER_KEYS, TRUNCATION)
SPLITS = ("train", "heldout_keys")

_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)|[。！？]")
_CONTENT_WORD = re.compile(r"[^\W_]{4,}")


@dataclass
class AugmentConfig:
    input: str = option(
        "", help="labelled examples: a datasets dir (save_to_disk) or jsonl (labelled or TREC)"
    )
    output: str = option("", help="output dir: a DatasetDict (train, heldout_keys) plus one jsonl per split")
    input_split: str = option("train", help="split to read when the input is a DatasetDict")
    families: list[str] = option(list(FAMILIES), help=f"master-key families to add, of {list(FAMILIES)}")
    heldout_families: list[str] = option(
        ["multilingual"], help="families kept out of train and written to the heldout_keys split"
    )
    truncate_max_words: int = option(8, help="a truncated response keeps at most this many words")
    truncation_overlap_max: float = option(
        0.34,
        help="skip a truncation when it still holds this share of the content words of a rubric the full "
        "response supported (it may still support it, so not_support would be a wrong label)",
    )
    regroup_rounds: int = option(
        1, help="reshuffles of each real response's rubrics into new windows (0: off)"
    )
    window_min: int = option(1, help="smallest regrouped window")
    window_max: int = option(10, help="largest regrouped window")
    include_original: bool = option(True, help="copy the input examples into train")
    seed: int = option(0, help="random seed for regrouping")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES)) + sorted(
            set(self.heldout_families) - set(FAMILIES)
        )
        if unknown:
            raise ConfigError(f"unknown augment families {unknown}; known: {list(FAMILIES)}")
        if not 1 <= self.window_min <= self.window_max:
            raise ConfigError(f"need 1 <= window_min <= window_max, got {self.window_min}..{self.window_max}")
        if self.regroup_rounds < 0 or self.truncate_max_words < 1:
            raise ConfigError("regroup_rounds must be >= 0 and truncate_max_words >= 1")


# ---------------------------------------------------------------- the augmentations (pure functions)


def _negative(example: LabelledExample, response: str, family: str, key_index: int) -> LabelledExample:
    return LabelledExample(
        qid=example.qid,
        question=example.question,
        response=response,
        response_id=f"{example.response_id if family == TRUNCATION else example.qid}:{family}:{key_index}",
        rubrics=list(example.rubrics),
        labels=[Label.NOT_SUPPORT.value] * len(example.rubrics),
        label_source=AUGMENT_PREFIX + family,
    )


def master_key_examples(
    examples: Sequence[LabelledExample], families: Sequence[str]
) -> list[LabelledExample]:
    """One example per (question, key) of each master-key family, every rubric ``not_support``."""
    first_per_question: dict[str, LabelledExample] = {}
    for example in examples:
        if example.rubrics:
            first_per_question.setdefault(example.qid, example)
    return [
        _negative(example, key, family, index)
        for example in first_per_question.values()
        for family in families
        if family in MASTER_KEYS
        for index, key in enumerate(MASTER_KEYS[family])
    ]


def truncate(response: str, max_words: int = 8) -> str | None:
    """The first sentence (or opener line) of a response, at most ``max_words`` words; None if that is the
    whole response (then it is no truncation)."""
    text = response.strip()
    first = text.split("\n", 1)[0].strip()
    end = _SENTENCE_END.search(first)
    if end is not None:
        first = first[: end.end()]
    words = first.split()
    first = " ".join(words[:max_words])
    if not first or " ".join(text.split()) == first:
        return None
    return first


def _content_words(text: str) -> set[str]:
    return {word.casefold() for word in _CONTENT_WORD.findall(text)}


def truncation_examples(
    examples: Sequence[LabelledExample], max_words: int = 8, overlap_max: float = 0.34
) -> tuple[list[LabelledExample], int]:
    """Each real response cut to its first sentence, all rubrics ``not_support``; returns (examples, skipped).

    A cut that still holds ``overlap_max`` of the content words of a rubric the full response supported is
    skipped: it may well support that rubric, and a wrong negative teaches the wrong thing.
    """
    out: list[LabelledExample] = []
    skipped = 0
    for example in examples:
        cut = truncate(example.response, max_words) if example.rubrics else None
        if cut is None:
            continue
        words = _content_words(cut)
        for rubric, label in zip(example.rubrics, example.labels, strict=True):
            rubric_words = _content_words(rubric.text)
            if (
                label != Label.NOT_SUPPORT
                and rubric_words
                and len(rubric_words & words) >= overlap_max * len(rubric_words)
            ):
                skipped += 1
                break
        else:
            out.append(_negative(example, cut, TRUNCATION, 0))
    return out, skipped


def regroup(
    examples: Sequence[LabelledExample],
    rounds: int = 1,
    window_min: int = 1,
    window_max: int = 10,
    seed: int = 0,
) -> list[LabelledExample]:
    """Reshuffle each example's rubrics into consecutive windows of random size; labels move with them."""
    rng = random.Random(seed)
    out: list[LabelledExample] = []
    for example in examples:
        n = len(example.rubrics)
        for round_index in range(rounds):
            order = rng.sample(range(n), n)
            start, window_index = 0, 0
            while start < n:
                size = rng.randint(window_min, window_max)
                part = order[start : start + size]
                out.append(
                    LabelledExample(
                        qid=example.qid,
                        question=example.question,
                        response=example.response,
                        response_id=f"{example.response_id}:{REGROUP}:{round_index}.{window_index}",
                        rubrics=[example.rubrics[i] for i in part],
                        labels=[example.labels[i] for i in part],
                        label_source=AUGMENT_PREFIX + REGROUP,
                    )
                )
                start += size
                window_index += 1
    return out


@dataclass
class AugmentResult:
    splits: dict[str, list[LabelledExample]]
    counts: dict[str, int]


def augment_examples(examples: Sequence[LabelledExample], config: AugmentConfig) -> AugmentResult:
    """Build the ``train`` and ``heldout_keys`` splits from real labelled examples."""
    real = [example for example in examples if not example.label_source.startswith(AUGMENT_PREFIX)]
    negatives = master_key_examples(real, config.families)
    skipped = 0
    if TRUNCATION in config.families:
        cut, skipped = truncation_examples(real, config.truncate_max_words, config.truncation_overlap_max)
        negatives += cut
    heldout_sources = {AUGMENT_PREFIX + family for family in config.heldout_families}
    regrouped = regroup(real, config.regroup_rounds, config.window_min, config.window_max, config.seed)
    train = list(examples) if config.include_original else []
    train += regrouped + [example for example in negatives if example.label_source not in heldout_sources]
    heldout = [example for example in negatives if example.label_source in heldout_sources]
    counts = Counter(example.label_source for example in negatives + regrouped)
    summary = {"input": len(examples), "train": len(train), "heldout_keys": len(heldout)}
    summary |= dict(sorted(counts.items())) | {"truncation_skipped": skipped}
    return AugmentResult(splits={"train": train, "heldout_keys": heldout}, counts=summary)


# ---------------------------------------------------------------- io and CLI


def write_splits(output: str | Path, result: AugmentResult, meta: dict) -> Path:
    """Save the DatasetDict to ``output`` and each split as ``output/<split>.jsonl``."""
    from datasets import Dataset, DatasetDict

    output = Path(output)
    features = labelled_features()
    data = DatasetDict(
        {
            name: Dataset.from_list([example.to_dict() for example in examples], features=features)
            for name, examples in result.splits.items()
        }
    )
    data.save_to_disk(str(output))
    for name, examples in result.splits.items():
        write_jsonl(output / f"{name}.jsonl", (example.to_dict() for example in examples))
    (output / "augment_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return output


def augment(config: AugmentConfig) -> AugmentResult:
    if not config.input or not config.output:
        raise ConfigError("augment needs --input (labelled examples) and --output (a directory)")
    examples = read_labelled_input(config.input, config.input_split)
    result = augment_examples(examples, config)
    meta = {"config": asdict(config), "config_hash": config_hash(config), "counts": result.counts}
    write_splits(config.output, result, meta)
    logger.info("augment: %s -> %s", result.counts, config.output)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None, help="YAML recipe; its `augment` section fills the config")
    add_config_arguments(parser, AugmentConfig)


def run(args: argparse.Namespace) -> int:
    config = build_config(AugmentConfig, args.recipe, "augment", args)
    result = augment(config)
    for name, count in result.counts.items():
        print(f"{name:>28}  {count}")
    print(f"wrote {config.output}")
    return 0
