"""Files of a build: the resumable progress log, gold for scoring, and the dataset outputs."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import RecordError, RubricSet, iter_jsonl, require, write_jsonl

logger = logging.getLogger(__name__)


class ProgressLog:
    """``progress.jsonl``: a header line with the config hash, then one finished question per line.

    Each record is written and flushed as soon as its question is done. A last line cut off by a kill
    is dropped (and truncated away) on reopening; a log from a different config is refused.
    """

    def __init__(self, path: str | Path, config_hash: str, resume: bool = True) -> None:
        self.path, self.config_hash = Path(path), config_hash
        self.done: dict[str, dict[str, Any]] = {}
        if resume and self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            write_jsonl(self.path, [{"header": {"config_hash": config_hash}}])

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):  # killed mid-write: keep the complete lines only
            keep = raw.rfind(b"\n") + 1
            logger.warning("%s: dropping a partial last line (%d bytes)", self.path, len(raw) - keep)
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
        if not self.path.stat().st_size:
            write_jsonl(self.path, [{"header": {"config_hash": self.config_hash}}])
            return
        for line_number, record in iter_jsonl(self.path):
            if line_number == 1:
                saved = (record.get("header") or {}).get("config_hash")
                if saved != self.config_hash:
                    raise ConfigError(
                        f"{self.path} was written by a build with config hash {saved!r}, this one is "
                        f"{self.config_hash!r}: use another --output, or --resume false to start over"
                    )
                continue
            rubric_set = require(record, "rubric_set", self.path, line_number, dict)
            self.done[require(rubric_set, "qid", self.path, line_number)] = record

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done[record["rubric_set"]["qid"]] = record


def read_gold(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Gold per question: ``{qid: {"nuggets": [text], "passages": [passage_id]}}``.

    Reads ``{qid, nuggets|gold_nuggets, passages|gold_passages}`` lines; nuggets may be strings or
    ``{text: ...}`` objects.
    """
    gold: dict[str, dict[str, list[str]]] = {}
    for line_number, record in iter_jsonl(path):
        qid = require(record, "qid", path, line_number)
        nuggets = record.get("nuggets", record.get("gold_nuggets")) or []
        passages = record.get("passages", record.get("gold_passages")) or []
        if not isinstance(nuggets, list) or not isinstance(passages, list):
            raise RecordError(path, line_number, "nuggets and passages must be lists", "nuggets")
        texts = [item["text"] if isinstance(item, dict) else str(item) for item in nuggets]
        gold[qid] = {"nuggets": texts, "passages": [str(p) for p in passages]}
    return gold


def write_trec_rubrics(path: str | Path, rubric_sets: Sequence[RubricSet]) -> None:
    """Nuggetizer/TREC jsonl form of the rubric sets."""
    from rubric_pipeline.trec import write_trec_jsonl

    write_trec_jsonl(path, list(rubric_sets))


def write_outputs(output: Path, rubric_sets: Sequence[RubricSet]) -> None:
    """``dataset/`` (replaced atomically), ``rubrics.parquet`` and ``rubrics.trec.jsonl``."""
    from datasets import Dataset

    from rubric_pipeline.core.records import rubric_set_features

    dataset = Dataset.from_list([rs.to_dict() for rs in rubric_sets], features=rubric_set_features())
    staging, final = output / "dataset.tmp", output / "dataset"
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    dataset.to_parquet(str(output / "rubrics.parquet"))
    write_trec_rubrics(output / "rubrics.trec.jsonl", rubric_sets)
