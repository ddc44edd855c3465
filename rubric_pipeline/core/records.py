"""Data contracts shared by both packages: passages, rubrics, rubric sets, labelled examples.

Every record has ``to_dict``/``from_dict`` so it round-trips through JSONL and Hugging Face ``datasets``
(see :func:`rubric_set_features` and :func:`labelled_features`). :class:`Rubric` and :class:`Source` are
pydantic models, the one parser of a rubric; the other records are plain dataclasses. Only the standard
library and pydantic are imported here (the RL-side adapters import this module without torch/datasets).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rubric_pipeline.core.errors import RecordError, validation_record_error

# The JSONL io lives in core/jsonl.py; re-exported here, where the readers of records import it from.
from rubric_pipeline.core.jsonl import iter_jsonl as iter_jsonl
from rubric_pipeline.core.jsonl import require as require
from rubric_pipeline.core.jsonl import write_jsonl as write_jsonl


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


class Source(BaseModel):
    """Provenance of a rubric: which passage, from which document (its URL and title when known),
    retrieved by which query."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    passage_id: str
    doc_id: str
    query: str
    url: str | None = None
    title: str | None = None

    def __init__(self, *args: Any, **data: Any) -> None:
        super().__init__(**_positional(type(self), args), **data)


def _positional(cls: type[BaseModel], args: tuple[Any, ...]) -> dict[str, Any]:
    """Positional constructor arguments by field order (``Rubric("r0", "text")``, as the dataclass took)."""
    names = list(cls.model_fields)
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments, got {len(args)}")
    return dict(zip(names, args, strict=False))


def _rubric_input(value: Any, index: int) -> Any:
    """A rubric as given (a bare string, or a dict whose optional fields may be absent or null) -> the
    dict the model validates: id ``r<index>`` when none is given, importance ``vital``, no sources."""
    if isinstance(value, str):
        return {"rubric_id": f"r{index}", "text": value}
    if not isinstance(value, dict):
        return value
    value = dict(value)
    if value.get("rubric_id") in (None, ""):
        value["rubric_id"] = f"r{index}"
    if value.get("importance") in (None, ""):
        value["importance"] = Importance.VITAL.value
    if value.get("sources") is None:
        value["sources"] = []
    return value


class Rubric(BaseModel):
    """One rubric: a bare string or ``{text, rubric_id?, importance?, weight?, sources?}``.

    The model is the one rubric parser: every reader (labelled jsonl, rubric sets, TREC files, the
    gateway body, the RL adapters) validates through it, so a rubric is read the same way everywhere.
    """

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    rubric_id: str
    text: str
    importance: Literal["vital", "okay"] = Importance.VITAL.value
    weight: float | None = Field(default=None, ge=0, strict=True)
    sources: list[Source] = Field(default_factory=list)

    def __init__(self, *args: Any, **data: Any) -> None:
        super().__init__(**_positional(type(self), args), **data)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _rubric_input(data, 0)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("empty rubric text")
        return text

    @field_validator("importance", mode="before")
    @classmethod
    def _known_importance(cls, importance: Any) -> Any:
        if importance not in (Importance.VITAL.value, Importance.OKAY.value):
            raise ValueError(f"unknown importance {importance!r}; expected vital or okay")
        return str(importance)

    def effective_weight(self) -> float:
        if self.weight is not None:
            return float(self.weight)
        return DEFAULT_WEIGHTS.get(self.importance, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(
        cls,
        data: Any,
        index: int = 0,
        *,
        source: str | Path | None = None,
        where: int | str | None = None,
        name: str | None = None,
    ) -> Rubric:
        """Parse one rubric (a string, a dict, or a Rubric); ``index`` gives the id ``r<index>`` of one
        without an id. A bad one raises :class:`RecordError` naming ``source``, ``where`` and the field
        (``name``, e.g. ``rubrics[3]``, then the path inside the rubric)."""
        try:
            return cls.model_validate(_rubric_input(data, index))
        except ValidationError as exc:
            raise validation_record_error(exc, source, where, name) from None


def parse_rubric_list(value: Any) -> list[Rubric]:
    """A sample's rubrics as an RL job passes them: a list of strings / rubric dicts, that list as JSON
    text, or ``{"rubrics": [...]}``; a bad one is a RecordError naming ``rubrics[i]`` and its field."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(None, None, f"expected a JSON list of rubrics ({exc.msg})", "rubrics") from None
    if isinstance(value, dict) and "rubrics" in value:
        value = value["rubrics"]
    if not isinstance(value, list):
        raise RecordError(None, None, f"expected a list of rubrics, got {type(value).__name__}", "rubrics")
    return [Rubric.from_dict(item, i, name=f"rubrics[{i}]") for i, item in enumerate(value)]


def _numbered(value: Any) -> Any:
    return [_rubric_input(item, i) for i, item in enumerate(value)] if isinstance(value, list) else value


# A list of rubrics as a pydantic field type (the gateway body): items without an id get ``r<position>``.
RubricList = Annotated[list[Rubric], BeforeValidator(_numbered)]


def _rubrics(items: list[Any], where: str) -> list[Rubric]:
    return [Rubric.from_dict(item, i, where=where, name=f"rubrics[{i}]") for i, item in enumerate(items)]


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
            rubrics=_rubrics(data.get("rubrics") or [], str(data["qid"])),
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
            problem = f"{len(self.labels)} labels for {len(self.rubrics)} rubrics"
            raise RecordError(None, self.response_id, problem, "labels")
        unknown = sorted(set(self.labels) - set(LABELS))
        if unknown:
            raise RecordError(None, self.response_id, f"unknown labels {unknown}", "labels")

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
            rubrics=_rubrics(data["rubrics"], str(data["response_id"])),
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
