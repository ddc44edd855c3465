"""Data contracts shared by both packages: passages, rubrics, rubric sets, labelled examples.

Every record is a plain dataclass with ``to_dict``/``from_dict`` so it round-trips through JSONL and
Hugging Face ``datasets`` (see :func:`rubric_set_features` and :func:`labelled_features`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Label(StrEnum):
    SUPPORT = "support"
    PARTIAL_SUPPORT = "partial_support"
    NOT_SUPPORT = "not_support"


LABELS: tuple[str, ...] = tuple(label.value for label in Label)
LABEL_SCORES: dict[str, float] = {"support": 1.0, "partial_support": 0.5, "not_support": 0.0}
# label_source of a generated adversarial example: "augment:<family>"
AUGMENT_PREFIX = "augment:"


class Importance(StrEnum):
    VITAL = "vital"
    OKAY = "okay"


DEFAULT_WEIGHTS: dict[str, float] = {"vital": 1.0, "okay": 0.5}


class RecordError(ValueError):
    """A bad input record: the message names the file, the line (or record id) and the field.

    ``where`` is a 1-based line number, a record id, or 0/None for the file as a whole (e.g. empty).
    """

    def __init__(
        self, source: str | Path, where: int | str | None, problem: str, field_name: str | None = None
    ):
        self.source, self.where, self.field_name, self.problem = str(source), where, field_name, problem
        if isinstance(where, str):
            location = f"{source}: record {where!r}"
        else:
            location = f"{source}: line {where}" if where else str(source)
        field_text = f", field {field_name!r}" if field_name else ""
        super().__init__(f"{location}{field_text}: {problem}")


@dataclass
class Passage:
    passage_id: str
    doc_id: str
    text: str
    title: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Passage:
        return cls(
            passage_id=str(data["passage_id"]),
            doc_id=str(data["doc_id"]),
            text=data["text"],
            title=data.get("title"),
            url=data.get("url"),
        )


@dataclass
class Source:
    """Provenance of a rubric: which passage, from which document (its URL and title when known),
    retrieved by which query."""

    passage_id: str
    doc_id: str
    query: str
    url: str | None = None
    title: str | None = None


@dataclass
class Rubric:
    rubric_id: str
    text: str
    importance: str = Importance.VITAL.value
    weight: float | None = None
    sources: list[Source] = field(default_factory=list)

    def effective_weight(self) -> float:
        if self.weight is not None:
            return float(self.weight)
        return DEFAULT_WEIGHTS.get(self.importance, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rubric_id": self.rubric_id,
            "text": self.text,
            "importance": self.importance,
            "weight": self.weight,
            "sources": [asdict(source) for source in self.sources],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str, index: int = 0) -> Rubric:
        """Accept a full rubric dict, or a bare string (id derived from position)."""
        if isinstance(data, str):
            return cls(rubric_id=f"r{index}", text=data)
        importance = data.get("importance") or Importance.VITAL.value
        if importance not in (Importance.VITAL, Importance.OKAY):
            raise ValueError(f"rubric {data.get('rubric_id', index)!r}: unknown importance {importance!r}")
        weight = data.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight)
        ):
            raise ValueError(
                f"rubric {data.get('rubric_id', index)!r}: weight must be a finite number, got {weight!r}"
            )
        return cls(
            rubric_id=str(data.get("rubric_id") or f"r{index}"),
            text=data["text"],
            importance=importance,
            weight=weight,
            sources=[Source(**source) for source in data.get("sources") or []],
        )


@dataclass
class RubricSet:
    """One question's rubrics. ``meta`` records model, prompt version and config hash."""

    qid: str
    question: str
    queries: list[str] = field(default_factory=list)
    rubrics: list[Rubric] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "question": self.question,
            "queries": list(self.queries),
            "rubrics": [rubric.to_dict() for rubric in self.rubrics],
            "meta": {key: META_FIELDS_DEFAULT.get(key, "") for key in META_FIELDS_DEFAULT} | self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RubricSet:
        return cls(
            qid=str(data["qid"]),
            question=data["question"],
            queries=list(data.get("queries") or []),
            rubrics=[Rubric.from_dict(r, i) for i, r in enumerate(data.get("rubrics") or [])],
            meta={k: v for k, v in (data.get("meta") or {}).items() if v is not None},
        )


@dataclass
class LabelledExample:
    qid: str
    question: str
    response: str
    response_id: str
    rubrics: list[Rubric]
    labels: list[str]
    label_source: str

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.rubrics):
            raise ValueError(
                f"response {self.response_id!r}: {len(self.labels)} labels for {len(self.rubrics)} rubrics"
            )
        unknown = sorted(set(self.labels) - set(LABELS))
        if unknown:
            raise ValueError(f"response {self.response_id!r}: unknown labels {unknown}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "question": self.question,
            "response": self.response,
            "response_id": self.response_id,
            "rubrics": [rubric.to_dict() for rubric in self.rubrics],
            "labels": list(self.labels),
            "label_source": self.label_source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelledExample:
        return cls(
            qid=str(data["qid"]),
            question=data["question"],
            response=data["response"],
            response_id=str(data["response_id"]),
            rubrics=[Rubric.from_dict(r, i) for i, r in enumerate(data["rubrics"])],
            labels=list(data["labels"]),
            label_source=data["label_source"],
        )


# ---------------------------------------------------------------- datasets.Features

META_FIELDS_DEFAULT: dict[str, str] = {
    "model": "",
    "prompt_version": "",
    "config_hash": "",
    "backend": "",
    "created_by": "rubric-verifier",
}


def rubric_features():
    """``datasets`` feature spec of one Rubric (imported lazily: datasets is heavy)."""
    from datasets import Value

    return {
        "rubric_id": Value("string"),
        "text": Value("string"),
        "importance": Value("string"),
        "weight": Value("float64"),
        "sources": [
            {
                "passage_id": Value("string"),
                "doc_id": Value("string"),
                "query": Value("string"),
                "url": Value("string"),
                "title": Value("string"),
            }
        ],
    }


def rubric_set_features():
    from datasets import Features, Value

    return Features(
        {
            "qid": Value("string"),
            "question": Value("string"),
            "queries": [Value("string")],
            "rubrics": [rubric_features()],
            "meta": {key: Value("string") for key in META_FIELDS_DEFAULT},
        }
    )


def labelled_features():
    from datasets import Features, Value

    return Features(
        {
            "qid": Value("string"),
            "question": Value("string"),
            "response": Value("string"),
            "response_id": Value("string"),
            "rubrics": [rubric_features()],
            "labels": [Value("string")],
            "label_source": Value("string"),
        }
    )


# ---------------------------------------------------------------- JSONL io


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; blank lines are skipped; bad JSON or text that is not UTF-8 raises
    :class:`RecordError`, a missing path or a folder ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: {'is a folder, not a JSONL file' if path.is_dir() else 'no such file'}"
        )
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(
                    path, line_number, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(path, line_number, f"malformed JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise RecordError(path, line_number, f"expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def require(record: dict[str, Any], name: str, source: str | Path, where: int | str, kind: type = str) -> Any:
    """Fetch a required field, raising :class:`RecordError` naming the record when absent or mistyped."""
    if name not in record or record[name] is None:
        raise RecordError(source, where, "missing required field", name)
    value = record[name]
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind):
        raise RecordError(source, where, f"expected {kind.__name__}, got {type(value).__name__}", name)
    return value


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]], append: bool = False) -> int:
    """Write records one per line (flushed), creating parent folders; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        handle.flush()
    return count


def read_questions(path: str | Path) -> list[tuple[str, str]]:
    """Read ``{qid, question}`` (``query`` accepted for ``question``) records; duplicates are an error."""
    questions: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line_number, record in iter_jsonl(path):
        qid = require(record, "qid", path, line_number)
        text = record.get("question", record.get("query"))
        if text is not None and not isinstance(text, str):
            raise RecordError(path, line_number, f"expected str, got {type(text).__name__}", "question")
        if not text or not text.strip():
            raise RecordError(path, line_number, "missing or empty question text", "question")
        if qid in seen:
            raise RecordError(path, line_number, f"duplicate qid {qid!r}", "qid")
        seen.add(qid)
        questions.append((qid, text.strip()))
    if not questions:
        raise RecordError(path, None, "no questions in the file (it is empty or blank)")
    return questions
