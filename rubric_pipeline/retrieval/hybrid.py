"""Hybrid retrieval: BM25 and dense candidates fused per query with reciprocal rank fusion."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rubric_pipeline.core.config import option
from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import (
    DEFAULT_CHUNK_BY,
    DEFAULT_CHUNK_WORDS,
    DEFAULT_OVERLAP_WORDS,
    Chunking,
    passages_fingerprint,
)
from rubric_pipeline.retrieval.base import ScoredPassage, to_hits
from rubric_pipeline.retrieval.bm25 import BM25Index
from rubric_pipeline.retrieval.dense import DEFAULT_MODEL, DenseIndex
from rubric_pipeline.retrieval.fusion import RRF_K, rrf_arrays
from rubric_pipeline.retrieval.store import load_index, read_meta, save_index

logger = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    """Corpus chunking and retrieval settings (recipe section ``build``; every field is also a flag)."""

    chunk_words: int = option(DEFAULT_CHUNK_WORDS, help="words per passage window when chunking documents")
    overlap_words: int = option(DEFAULT_OVERLAP_WORDS, help="words shared by consecutive windows")
    chunk_by: Chunking = option(
        DEFAULT_CHUNK_BY,
        help="passage windows of whole sentences as written, line breaks kept (sentences), or of words",
    )
    bm25: bool = option(True, help="use the BM25 (bm25s) retriever")
    dense: bool = option(True, help="use the dense (sentence-transformers) retriever")
    dense_model: str = option(
        DEFAULT_MODEL,
        help="passage/query encoder: all-MiniLM-L6-v2, minilm-static (model2vec, distilled locally once), "
        "model2vec:PATH, or a sentence-transformers name or path",
    )
    dense_index: Literal["exact", "ivf"] = option(
        "exact", help="dense search: exact (numpy, small corpora) or ivf (faiss IVF, approximate, large ones)"
    )
    ivf_nlist: int = option(0, help="IVF lists (0: about 4 * sqrt(passages))")
    ivf_nprobe: int = option(32, help="IVF lists scanned per query (more: higher recall, slower)")
    mmap: bool = option(True, help="memory-map saved indices (BM25 scores, embeddings, IVF lists)")
    bm25_backend: Literal["numpy", "numba", "auto"] = option(
        "numpy", help="bm25s scorer: numba is several times faster on big corpora after a ~10 s JIT"
    )
    depth: int = option(100, help="candidates taken from each retriever before fusion")
    k: int = option(10, help="passages kept per query after fusion")
    rrf_k: int = option(RRF_K, help="reciprocal rank fusion constant")
    embed_batch_size: int = option(64, help="batch size for embedding passages and queries")
    index_dir: str | None = option(
        None, help="save indices here and reuse them while the corpus is unchanged"
    )
    web_search_url: str | None = option(
        None,
        help="base URL of a SearXNG-compatible JSON search API (build: alone, or fused with --corpus by RRF)",
    )
    web_concurrency: int = option(8, help="concurrent web search requests")


class HybridRetriever:
    """BM25 and/or dense retrieval over one passage table, fused with RRF when both are enabled."""

    def __init__(
        self,
        passages: Sequence[Passage],
        bm25: bool | BM25Index = True,
        dense: bool | DenseIndex = True,
        depth: int = 100,
        rrf_k: int = RRF_K,
        dense_model: str | None = None,
        batch_size: int = 64,
        bm25_backend: str = "numpy",
        show_progress: bool = True,
        dense_index: Literal["exact", "ivf"] = "exact",
        ivf_nlist: int = 0,
        ivf_nprobe: int = 32,
    ) -> None:
        if not bm25 and not dense:
            raise ValueError("enable at least one of bm25 and dense retrieval")
        self.passages = list(passages)
        self.depth, self.rrf_k = depth, rrf_k
        self.bm25: BM25Index | None = None
        self.dense: DenseIndex | None = None
        if isinstance(bm25, BM25Index):
            self.bm25 = bm25
        elif bm25:
            self.bm25 = BM25Index(self.passages, backend=bm25_backend, show_progress=show_progress)
        if isinstance(dense, DenseIndex):
            self.dense = dense
        elif dense:
            self.dense = DenseIndex(
                self.passages,
                model=dense_model,
                batch_size=batch_size,
                show_progress=show_progress,
                ann=dense_index,
                nlist=ivf_nlist,
                nprobe=ivf_nprobe,
            )

    @classmethod
    def from_config(
        cls, passages: Sequence[Passage], config: RetrievalConfig, show_progress: bool = True
    ) -> HybridRetriever:
        """Build the retriever ``config`` describes, reusing ``config.index_dir`` if it matches."""
        index_dir = Path(config.index_dir) if config.index_dir else None
        saved = read_meta(index_dir, "hybrid") if index_dir is not None else None
        if saved is not None:
            wanted = {"bm25": config.bm25, "dense": config.dense}
            if config.dense:
                wanted |= {"dense_model": config.dense_model, "dense_index": config.dense_index}
                if config.dense_index == "ivf":
                    wanted["ivf_nlist"] = config.ivf_nlist
            if saved.get("fingerprint") == passages_fingerprint(passages) and all(
                saved.get(key) == value for key, value in wanted.items()
            ):
                logger.info("reusing retrieval indices in %s", index_dir)
                return cls.load(
                    index_dir,
                    depth=config.depth,
                    rrf_k=config.rrf_k,
                    mmap=config.mmap,
                    ivf_nprobe=config.ivf_nprobe,
                    passages=passages,
                    bm25_backend=config.bm25_backend,
                )
            logger.info("indices in %s do not match this corpus/config: rebuilding", index_dir)
        retriever = cls(
            passages,
            bm25=config.bm25,
            dense=config.dense,
            depth=config.depth,
            rrf_k=config.rrf_k,
            dense_model=config.dense_model,
            batch_size=config.embed_batch_size,
            show_progress=show_progress,
            dense_index=config.dense_index,
            ivf_nlist=config.ivf_nlist,
            ivf_nprobe=config.ivf_nprobe,
            bm25_backend=config.bm25_backend,
        )
        if index_dir is not None:
            retriever.save(index_dir)
        return retriever

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query; with both retrievers the score is the RRF score."""
        queries = list(queries)
        if not queries:
            return []
        depth = max(self.depth, k)
        sparse = self.bm25.top_k(queries, depth) if self.bm25 else None
        dense = self.dense.top_k(self.dense.encode_queries(queries), depth) if self.dense else None
        if sparse is None or dense is None:
            indices, scores = sparse or dense  # type: ignore[misc]
            return to_hits(self.passages, indices[:, :k], scores[:, :k])
        return to_hits(self.passages, *rrf_arrays([sparse[0], dense[0]], k=self.rrf_k, top=k))

    def save(self, directory: str | Path) -> Path:
        """One passage table at the top, the BM25 and dense indices in ``bm25/`` and ``dense/`` beside it."""
        fingerprint = passages_fingerprint(self.passages)

        def write(path: Path) -> None:
            for name, index in (("bm25", self.bm25), ("dense", self.dense)):
                if index is not None:
                    index.save(path / name, with_passages=False, fingerprint=fingerprint)

        dense = self.dense
        return save_index(
            directory,
            "hybrid",
            self.passages,
            write,
            fingerprint=fingerprint,
            bm25=self.bm25 is not None,
            dense=dense is not None,
            dense_model=dense.model if dense else None,
            dense_index=dense.ann if dense else None,
            ivf_nlist=int(dense.ivf.nlist) if dense and dense.ivf is not None else 0,
            depth=self.depth,
            rrf_k=self.rrf_k,
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        depth: int | None = None,
        rrf_k: int | None = None,
        mmap: bool = False,
        bm25_backend: str = "numpy",
        ivf_nprobe: int | None = None,
        passages: Sequence[Passage] | None = None,
    ) -> HybridRetriever:
        """Load what :meth:`save` wrote; ``passages`` (already read, e.g. the corpus) skips the table."""
        directory = Path(directory)
        meta, passages = load_index(directory, "hybrid", passages)
        bm25: BM25Index | bool = False
        dense: DenseIndex | bool = False
        if meta["bm25"]:
            bm25 = BM25Index.load(directory / "bm25", mmap=mmap, backend=bm25_backend, passages=passages)
        if meta["dense"]:
            dense = DenseIndex.load(directory / "dense", mmap=mmap, passages=passages, nprobe=ivf_nprobe)
        return cls(
            passages,
            bm25=bm25,
            dense=dense,
            depth=meta["depth"] if depth is None else depth,
            rrf_k=meta["rrf_k"] if rrf_k is None else rrf_k,
            show_progress=False,
        )
