"""What every retriever returns: passages with their score and rank, best first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rubric_pipeline.core.records import Passage


@dataclass(frozen=True)
class ScoredPassage:
    """A retrieved passage with the retriever's score and its 1-based rank in that result list."""

    passage: Passage
    score: float
    rank: int

    @property
    def passage_id(self) -> str:
        return self.passage.passage_id


class Retriever(Protocol):
    def search(self, queries: list[str], k: int = 10) -> list[list[ScoredPassage]]: ...
