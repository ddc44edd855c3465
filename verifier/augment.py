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
from typing import Any

from rubric_pipeline.config import add_config_arguments, build_config, config_hash, option
from rubric_pipeline.schema import (
    LABELS,
    Importance,
    Label,
    LabelledExample,
    RecordError,
    Rubric,
    Source,
    iter_jsonl,
    labelled_features,
    require,
    write_jsonl,
)

logger = logging.getLogger(__name__)

MASTER_KEYS: dict[str, tuple[str, ...]] = {
    "punctuation": (" ", ".", ",", ":"),
    "reasoning-opener": ("Thought process:", "Let's solve this problem step by step.", "Solution"),
    "multilingual": ("解", "かいせつ", "Respuesta"),
}
TRUNCATION = "truncation"
REGROUP = "regroup"
FAMILIES: tuple[str, ...] = (*MASTER_KEYS, TRUNCATION)
AUGMENT_PREFIX = "augment:"
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
            raise ValueError(f"unknown augment families {unknown}; known: {list(FAMILIES)}")
        if not 1 <= self.window_min <= self.window_max:
            raise ValueError(f"need 1 <= window_min <= window_max, got {self.window_min}..{self.window_max}")
        if self.regroup_rounds < 0 or self.truncate_max_words < 1:
            raise ValueError("regroup_rounds must be >= 0 and truncate_max_words >= 1")


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


_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes (DatasetDict, Dataset)


def load_saved_dataset(path: Path, expected: str, split: str | None = None) -> Any:
    """The Dataset in a folder written by ``save_to_disk``; of a DatasetDict, ``split`` (None: its only
    split). Any other folder, or a missing split, is a RecordError naming the folder and what was expected."""
    if not any((path / marker).is_file() for marker in _DATASET_MARKERS):
        problem = "a folder, but not a `datasets` folder (no dataset_dict.json or state.json)"
        raise RecordError(path, None, f"{problem}; expected {expected}")
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise RecordError(
            path, None, f"cannot load this `datasets` folder ({exc}); expected {expected}"
        ) from None
    if not isinstance(data, DatasetDict):
        return data
    if split is None and len(data) != 1:
        raise RecordError(path, None, f"a DatasetDict with splits {list(data)}: pass one split's dir")
    if split is not None and split not in data:
        raise RecordError(path, split, f"no split {split!r}; splits: {list(data)}")
    return data[split] if split is not None else next(iter(data.values()))


def _typed(value: Any, kind: type | tuple[type, ...], source: Path, where: int | str, name: str) -> Any:
    if value is None:
        raise RecordError(source, where, "missing required field", name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RecordError(source, where, f"expected {kinds}, got {type(value).__name__}", name)
    return value


def parse_rubric(value: Any, source: Path, where: int | str, name: str, index: int) -> Rubric:
    """A rubric: a bare string (id ``r<index>``) or ``{text, rubric_id?, importance?, weight?, sources?}``."""
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(source, where, "empty rubric text", name)
        return Rubric(rubric_id=f"r{index}", text=value)
    value = _typed(value, dict, source, where, name)
    text = _typed(value.get("text"), str, source, where, f"{name}.text")
    if not text.strip():
        raise RecordError(source, where, "empty rubric text", f"{name}.text")
    importance = value.get("importance") or Importance.VITAL.value
    if importance not in (Importance.VITAL, Importance.OKAY):
        raise RecordError(
            source, where, f"unknown importance {importance!r}; expected vital or okay", f"{name}.importance"
        )
    weight = value.get("weight")
    if weight is not None:
        _typed(weight, (int, float), source, where, f"{name}.weight")
    sources = []
    for k, item in enumerate(_typed(value.get("sources") or [], list, source, where, f"{name}.sources")):
        try:
            sources.append(Source(**_typed(item, dict, source, where, f"{name}.sources[{k}]")))
        except TypeError as exc:
            raise RecordError(source, where, f"not a source ({exc})", f"{name}.sources[{k}]") from None
    rubric_id = value.get("rubric_id")
    rubric_id = f"r{index}" if rubric_id in (None, "") else str(rubric_id)
    return Rubric(rubric_id, text, importance, weight, sources)


def parse_rubrics(record: dict[str, Any], source: Path, where: int | str) -> list[Rubric]:
    """The record's ``rubrics`` list, every item checked (the field named in any error)."""
    rubrics = require(record, "rubrics", source, where, list)
    return [parse_rubric(item, source, where, f"rubrics[{i}]", i) for i, item in enumerate(rubrics)]


def parse_labelled(record: dict[str, Any], source: Path, where: int | str) -> LabelledExample:
    """A :class:`LabelledExample` from one record, every field checked; RecordError names the bad one."""
    qid, question, response, response_id = (
        require(record, name, source, where) for name in ("qid", "question", "response", "response_id")
    )
    rubrics = parse_rubrics(record, source, where)
    labels = require(record, "labels", source, where, list)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or label not in LABELS:
            problem = f"unknown label {label!r}; expected one of {list(LABELS)}"
            raise RecordError(source, where, problem, f"labels[{i}]")
    if len(labels) != len(rubrics):
        raise RecordError(source, where, f"{len(labels)} labels for {len(rubrics)} rubrics", "labels")
    label_source = require(record, "label_source", source, where)
    return LabelledExample(qid, question, response, response_id, rubrics, list(labels), label_source)


LABELLED_INPUT = "a labelled jsonl (ours or TREC) or a `datasets` folder written by save_to_disk"


def read_labelled_input(path: str | Path, split: str | None = "train") -> list[LabelledExample]:
    """A ``datasets`` dir (Dataset or DatasetDict) or a jsonl of labelled examples or TREC records.

    ``split`` picks a DatasetDict's split; None accepts a DatasetDict only when it has exactly one.
    """
    path = Path(path)
    if path.is_dir():
        data = load_saved_dataset(path, LABELLED_INPUT, split)
        examples = [
            parse_labelled(row, path, str(row.get("response_id") or f"row {index}"))
            for index, row in enumerate(data)
        ]
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {LABELLED_INPUT}")
    else:
        first = next(iter_jsonl(path), (0, {}))[1]
        if "answer_text" in first and "nuggets" in first:
            from rubric_pipeline.trec import read_trec_labelled

            return read_trec_labelled(path)
        examples = [parse_labelled(record, path, line) for line, record in iter_jsonl(path)]
    if not examples:
        empty = "the dataset has no rows" if path.is_dir() else "the file is empty or blank"
        raise RecordError(path, None, f"no labelled examples ({empty})")
    return examples


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
        raise ValueError("augment needs --input (labelled examples) and --output (a directory)")
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
