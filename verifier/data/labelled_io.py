"""Reading labelled examples: our JSONL, TREC RAG records, or a `datasets` folder, every field checked.

Every reader raises :class:`RecordError` naming the file, the line (or row) and the bad field, so the
commands that take labelled data (augment, eval, teacher, train) fail with one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rubric_pipeline.core.records import (
    LABELS,
    LabelledExample,
    RecordError,
    Rubric,
    iter_jsonl,
    require,
)

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


def parse_rubric(value: Any, source: Path, where: int | str, name: str, index: int) -> Rubric:
    """A rubric: a bare string (id ``r<index>``) or ``{text, rubric_id?, importance?, weight?, sources?}``,
    parsed by :meth:`Rubric.from_dict`; a bad one is a RecordError naming ``name`` and the field in it."""
    return Rubric.from_dict(value, index, source=source, where=where, name=name)


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


def load_labelled(path: str | Path) -> list[LabelledExample]:
    """Labelled examples from a LabelledExample jsonl, a TREC/nuggetizer jsonl, or a one-split datasets dir.

    Every record is checked as ``augment`` checks it: a bad one is a RecordError naming line and field.
    """
    return read_labelled_input(path, split=None)
