"""TREC RAG 2024 / nuggetizer jsonl: read into labelled examples and rubric sets, write rubric sets back.

One record per line: ``{qid, query, run_id, answer_text, nuggets: [{text, importance, assignment}]}``
(assignment files; nuggetizer's retrieval mode writes ``candidate_text`` or ``text`` for the answer and
``docid`` for the run) or ``{qid, query, nuggets: [{text, importance}]}`` (nugget files). A missing
importance reads as ``okay``, as in nuggetizer; an assignment of ``"failed"`` (nuggetizer's mark for an
assigner call that failed) is an absent label: that nugget is left out of that one example. Nugget texts are
stripped for the rubric text (the NIST file carries stray spaces) but never merged, so counts are kept.
Rubric ids are stable per topic: ``f"{qid}#n{k}"`` for the k-th distinct nugget of the topic in file order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rubric_pipeline.core.records import (
    LABELS,
    Importance,
    LabelledExample,
    RecordError,
    Rubric,
    RubricSet,
    iter_jsonl,
    require,
    write_jsonl,
)

logger = logging.getLogger(__name__)

LABEL_SOURCE = "human:trec"
FAILED = "failed"


class _TopicRubrics:
    """Assigns stable rubric ids within one topic: the same (text, importance, repeat) -> the same id."""

    def __init__(self, qid: str):
        self.qid = qid
        self.ids: dict[tuple[str, str, int], str] = {}

    def rubrics(self, nuggets: list[tuple[str, str]]) -> list[Rubric]:
        seen: Counter[tuple[str, str]] = Counter()
        rubrics = []
        for text, importance in nuggets:
            key = (text, importance, seen[(text, importance)])
            seen[(text, importance)] += 1
            rubric_id = self.ids.setdefault(key, f"{self.qid}#n{len(self.ids)}")
            rubrics.append(Rubric(rubric_id=rubric_id, text=text, importance=importance))
        return rubrics


def _nuggets(
    record: dict[str, Any], path: Path, line: int, with_labels: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    nuggets = require(record, "nuggets", path, line, list)
    pairs: list[tuple[str, str]] = []
    labels: list[str] = []
    for index, nugget in enumerate(nuggets):
        where = f"nuggets[{index}]"
        if not isinstance(nugget, dict):
            raise RecordError(path, line, f"expected an object, got {type(nugget).__name__}", where)
        # nuggetizer reads a nugget without importance as okay (the rubric record's own default is vital)
        nugget = {**nugget, "importance": nugget.get("importance") or Importance.OKAY.value}
        rubric = Rubric.from_dict(nugget, index, source=path, where=line, name=where)
        pairs.append((rubric.text.strip(), rubric.importance))
        if with_labels:
            label = nugget.get("assignment")
            if label == FAILED:
                labels.append(FAILED)
                continue
            if label not in LABELS:
                raise RecordError(
                    path,
                    line,
                    f"unknown assignment {label!r}; expected one of {[*LABELS, FAILED]}",
                    f"{where}.assignment",
                )
            labels.append(label)
    return pairs, labels


def _first_field(record: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of ``names`` the record has (else the first, so the error names the usual field)."""
    return next((name for name in names if name in record), names[0])


def _question(record: dict[str, Any], path: Path, line: int) -> str:
    text = record.get("query", record.get("question"))
    if not isinstance(text, str) or not text.strip():
        raise RecordError(path, line, "missing or empty query text", "query")
    return text.strip()


def read_trec_labelled(path: str | Path) -> list[LabelledExample]:
    """Every assignment record as a :class:`LabelledExample` (label_source ``"human:trec"``).

    Identical answers with different labels stay separate records; a repeated ``(qid, run_id)`` gets a
    ``~2``, ``~3`` ... suffix on its response id.
    """
    path = Path(path)
    topics: dict[str, _TopicRubrics] = {}
    seen_ids: Counter[str] = Counter()
    examples: list[LabelledExample] = []
    failed = 0
    for line, record in iter_jsonl(path):
        qid = require(record, "qid", path, line)
        run_id = require(record, _first_field(record, ("run_id", "docid")), path, line)
        answer = require(record, _first_field(record, ("answer_text", "candidate_text", "text")), path, line)
        pairs, labels = _nuggets(record, path, line, with_labels=True)
        if not pairs:
            raise RecordError(path, line, "no nuggets", "nuggets")
        rubrics = topics.setdefault(qid, _TopicRubrics(qid)).rubrics(pairs)
        if FAILED in labels:
            failed += labels.count(FAILED)
            kept = [(r, label) for r, label in zip(rubrics, labels, strict=True) if label != FAILED]
            if not kept:
                logger.warning("%s line %d: every assignment failed; record skipped", path, line)
                continue
            rubrics, labels = [r for r, _ in kept], [label for _, label in kept]
        response_id = f"{qid}:{run_id}"
        seen_ids[response_id] += 1
        if seen_ids[response_id] > 1:
            response_id = f"{response_id}~{seen_ids[response_id]}"
        examples.append(
            LabelledExample(
                qid=qid,
                question=_question(record, path, line),
                response=answer,
                response_id=response_id,
                rubrics=rubrics,
                labels=labels,
                label_source=LABEL_SOURCE,
            )
        )
    if failed:
        logger.warning("%s: %d failed assignments read as absent labels", path, failed)
    if not examples:
        raise RecordError(path, 0, "no records in file")
    logger.info("read %d TREC labelled records (%d topics) from %s", len(examples), len(topics), path)
    return examples


def read_trec_rubric_sets(path: str | Path) -> list[RubricSet]:
    """One :class:`RubricSet` per topic (first record's nuggets; later records must agree), file order."""
    path = Path(path)
    sets: dict[str, RubricSet] = {}
    topics: dict[str, _TopicRubrics] = {}
    for line, record in iter_jsonl(path):
        qid = require(record, "qid", path, line)
        pairs, _ = _nuggets(record, path, line, with_labels=False)
        rubrics = topics.setdefault(qid, _TopicRubrics(qid)).rubrics(pairs)
        if qid not in sets:
            meta = {"created_by": LABEL_SOURCE}
            sets[qid] = RubricSet(qid=qid, question=_question(record, path, line), rubrics=rubrics, meta=meta)
        elif [r.rubric_id for r in rubrics] != [r.rubric_id for r in sets[qid].rubrics]:
            raise RecordError(path, line, f"topic {qid!r} has a different nugget list than before", "nuggets")
    if not sets:
        raise RecordError(path, 0, "no records in file")
    return list(sets.values())


def rubric_set_record(rubric_set: RubricSet) -> dict[str, Any]:
    """The nuggetizer form of one rubric set: ``{qid, query, nuggets: [{text, importance}]}``."""
    return {
        "qid": rubric_set.qid,
        "query": rubric_set.question,
        "nuggets": [{"text": rubric.text, "importance": rubric.importance} for rubric in rubric_set.rubrics],
    }


def write_trec_jsonl(path: str | Path, rubric_sets: Iterable[RubricSet]) -> int:
    """Write rubric sets in nuggetizer form (readable by :func:`read_trec_rubric_sets`); returns the count."""
    return write_jsonl(path, (rubric_set_record(rubric_set) for rubric_set in rubric_sets))
