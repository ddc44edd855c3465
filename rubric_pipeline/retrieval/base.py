"""What every retriever returns: passages with their score and rank, best first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

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


def to_hits(
    passages: Sequence[Passage], indices: np.ndarray, scores: np.ndarray
) -> list[list[ScoredPassage]]:
    """Rows of passage indices (best first, -1: none) and scores -> ranked :class:`ScoredPassage` lists."""
    return [
        [
            ScoredPassage(passages[index], float(score), rank)
            for rank, (index, score) in enumerate(
                ((i, s) for i, s in zip(row_indices, row_scores, strict=True) if i >= 0), start=1
            )
        ]
        for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
    ]
