"""Sparse retrieval: a BM25 index over passages built with ``bm25s`` and saved to / loaded from disk."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import index_text, passages_fingerprint, read_passages, write_passages
from rubric_pipeline.retrieval.base import ScoredPassage

logger = logging.getLogger(__name__)

STOPWORDS = "en"
META_FILE = "meta.json"
PASSAGES_FILE = "passages.jsonl"
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

    def search(self, queries: Sequence[str], k: int = 10, n_threads: int = 0) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query, best first; passages sharing no term with the query are left out."""
        if not queries:
            return []
        k = min(k, len(self.passages))
        doc_indices, scores = self.retriever.retrieve(
            tokenize(queries), k=k, show_progress=False, n_threads=n_threads
        )
        results = []
        for row_indices, row_scores in zip(doc_indices.tolist(), scores.tolist(), strict=True):
            hits = [(index, score) for index, score in zip(row_indices, row_scores, strict=True) if score > 0]
            results.append(
                [
                    ScoredPassage(self.passages[index], float(score), rank)
                    for rank, (index, score) in enumerate(hits, start=1)
                ]
            )
        return results

    def save(self, directory: str | Path) -> Path:
        """Write the bm25s index, the passage table and a small meta file under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(directory / INDEX_DIR), show_progress=False)
        write_passages(directory / PASSAGES_FILE, self.passages)
        meta = {
            "kind": "bm25",
            "passages": len(self.passages),
            "fingerprint": passages_fingerprint(self.passages),
            "stopwords": STOPWORDS,
            **self.params,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False, backend: str = "numpy") -> BM25Index:
        """Load an index written by :meth:`save` (``mmap`` keeps the score arrays on disk)."""
        import bm25s

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no BM25 index at {directory} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        passages = read_passages(directory / PASSAGES_FILE)
        backend = resolve_backend(backend)
        retriever = bm25s.BM25.load(
            str(directory / INDEX_DIR), mmap=mmap, show_progress=False, backend=backend
        )
        if retriever.scores["num_docs"] != len(passages) or meta.get("passages") != len(passages):
            raise ValueError(
                f"{directory}: index holds {retriever.scores['num_docs']} documents but the passage table "
                f"{len(passages)} (meta says {meta.get('passages')})"
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

    @staticmethod
    def saved_fingerprint(directory: str | Path) -> str | None:
        """The passage fingerprint recorded by :meth:`save`, or None when no index is there."""
        meta_path = Path(directory) / META_FILE
        if not meta_path.is_file():
            return None
        return json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint")
