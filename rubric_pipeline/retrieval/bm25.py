"""Sparse retrieval: a BM25 index over passages built with ``bm25s``; saved with the shared store layout and
loadable memory-mapped (``mmap=True``), so a million-passage index serves from the page cache."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import index_text
from rubric_pipeline.retrieval.base import ScoredPassage, to_hits
from rubric_pipeline.retrieval.store import load_index, save_index

logger = logging.getLogger(__name__)

STOPWORDS = "en"
INDEX_DIR = "bm25s"
BACKENDS = ("numpy", "numba", "auto")


def resolve_backend(backend: str) -> str:
    """``auto`` -> numba when installed, else numpy. Numba scores ~17x faster but JIT-compiles for ~7 s
    on the first search of a process, so it pays off only for large query batches."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown BM25 backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        return "numba" if importlib.util.find_spec("numba") is not None else "numpy"
    return backend


def tokenize(texts: Sequence[str], show_progress: bool = False) -> list[list[str]]:
    """Query tokenizer: bm25s' default (lowercase, ``\\w\\w+``), English stopwords, no stemmer."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, return_ids=False, show_progress=show_progress)


class BM25Index:
    """BM25 (Lucene variant by default) over a passage table; ``search`` scores a batch of queries at once.

    ``backend`` picks bm25s' scorer: ``numpy`` (default, no start-up cost), ``numba`` or ``auto``.
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        backend: str = "numpy",
        show_progress: bool = True,
        _retriever: Any = None,
    ) -> None:
        if not passages:
            raise ValueError("cannot index an empty passage list")
        self.passages = list(passages)
        self.params = {"k1": k1, "b": b, "method": method}
        self.backend = resolve_backend(backend)
        if _retriever is None:
            import bm25s

            corpus_tokens = bm25s.tokenize(
                [index_text(passage) for passage in self.passages],
                stopwords=STOPWORDS,
                show_progress=show_progress,
            )
            _retriever = bm25s.BM25(k1=k1, b=b, method=method, backend=self.backend)
            _retriever.index(corpus_tokens, show_progress=show_progress)
            logger.info("BM25 index: %d passages, %d terms", len(self.passages), len(_retriever.vocab_dict))
        self.retriever = _retriever

    def __len__(self) -> int:
        return len(self.passages)

    def top_k(self, queries: Sequence[str], k: int = 10, n_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)``, each ``(n_queries, k)``, best first; -1 where a passage shares no term.

        ``n_threads``: the numba scorer's threads (0: all). The numpy scorer selects among the passages that
        share a term only: bm25s' own selection (``argpartition`` at ``-k`` over every score) meets ties at
        zero, which numpy's AVX-512 partition handles ~25x slower (4x the whole search on 20k passages)."""
        k = min(k, len(self.passages))
        if self.backend == "numpy":
            return self._top_k_matching(tokenize(queries), k)
        doc_indices, scores = self.retriever.retrieve(
            tokenize(queries), k=k, show_progress=False, n_threads=n_threads
        )
        doc_indices = np.asarray(doc_indices, dtype=np.int64).reshape(len(queries), k)
        scores = np.asarray(scores).reshape(len(queries), k)
        return np.where(scores > 0, doc_indices, -1), scores

    def _top_k_matching(self, query_tokens: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by bm25s scores, chosen among the passages scoring above zero; -1 / 0 pad the rest."""
        indices = np.full((len(query_tokens), k), -1, dtype=np.int64)
        scores = np.zeros((len(query_tokens), k), dtype=np.float32)
        for row, tokens in enumerate(query_tokens):
            token_ids = self.retriever.get_tokens_ids(tokens)
            if not token_ids:
                continue
            doc_scores = self.retriever.get_scores_from_ids(token_ids)
            hits = np.flatnonzero(doc_scores > 0)
            if len(hits) > k:
                hits = hits[np.argpartition(-doc_scores[hits], k - 1)[:k]]
            hits = hits[np.argsort(-doc_scores[hits], kind="stable")]
            indices[row, : len(hits)] = hits
            scores[row, : len(hits)] = doc_scores[hits]
        return indices, scores

    def search(self, queries: Sequence[str], k: int = 10, n_threads: int = 0) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query, best first; passages sharing no term with the query are left out."""
        if not queries:
            return []
        return to_hits(self.passages, *self.top_k(queries, k, n_threads))

    def save(self, directory: str | Path, with_passages: bool = True, fingerprint: str | None = None) -> Path:
        """Write the bm25s index and (unless a parent holds it) the passage table under ``directory``."""
        return save_index(
            directory,
            "bm25",
            self.passages,
            lambda path: self.retriever.save(str(path / INDEX_DIR), show_progress=False),
            with_passages=with_passages,
            fingerprint=fingerprint,
            stopwords=STOPWORDS,
            **self.params,
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        mmap: bool = False,
        backend: str = "numpy",
        passages: Sequence[Passage] | None = None,
    ) -> BM25Index:
        """Load an index written by :meth:`save`; ``mmap`` leaves the score arrays on disk, paged in."""
        import bm25s

        directory = Path(directory)
        meta, passages = load_index(directory, "bm25", passages)
        backend = resolve_backend(backend)
        retriever = bm25s.BM25.load(
            str(directory / INDEX_DIR), mmap=mmap, show_progress=False, backend=backend
        )
        if retriever.scores["num_docs"] != len(passages):
            raise ValueError(
                f"{directory}: the bm25s index holds {retriever.scores['num_docs']} documents but the "
                f"passage table {len(passages)}"
            )
        return cls(
            passages,
            k1=meta["k1"],
            b=meta["b"],
            method=meta["method"],
            backend=backend,
            show_progress=False,
            _retriever=retriever,
        )
