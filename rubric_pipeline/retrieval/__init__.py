"""Retrieval over passages: BM25 (bm25s), dense (sentence-transformers), RRF fusion, web search.

Every local retriever answers a batch of queries at once:
``search(queries, k) -> list[list[ScoredPassage]]``, one ranked list per query, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rubric_pipeline.schema import Passage


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


from rubric_pipeline.retrieval.bm25 import BM25Index  # noqa: E402
from rubric_pipeline.retrieval.dense import DenseIndex  # noqa: E402
from rubric_pipeline.retrieval.fusion import rrf  # noqa: E402
from rubric_pipeline.retrieval.hybrid import HybridRetriever, RetrievalConfig  # noqa: E402
from rubric_pipeline.retrieval.web import HTTPSearchBackend, WebSearchBackend, WebSearchError  # noqa: E402

__all__ = [
    "BM25Index",
    "DenseIndex",
    "HTTPSearchBackend",
    "HybridRetriever",
    "RetrievalConfig",
    "Retriever",
    "ScoredPassage",
    "WebSearchBackend",
    "WebSearchError",
    "rrf",
]
