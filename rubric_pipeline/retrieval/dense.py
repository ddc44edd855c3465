"""Dense retrieval: passage embeddings searched exactly (numpy) or approximately (a faiss IVF index).

Embeddings are L2-normalised float32, so inner product is cosine similarity. ``ann="exact"`` scores every
passage (``argpartition`` per block of queries, then sorts the k survivors): exact, and the right choice
up to some tens of thousands of passages. ``ann="ivf"`` clusters the passages into ``nlist`` inverted lists
(faiss ``IndexIVFFlat``) and scans the ``nprobe`` lists nearest to each query: the scores of what it finds
are exact, only the candidate set is approximate. Saved indices load memory-mapped (``mmap=True``), so
serving a million passages touches only the lists a query probes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import index_text
from rubric_pipeline.retrieval.base import ScoredPassage, to_hits
from rubric_pipeline.retrieval.encoders import DEFAULT_MODEL, encode, load_encoder, resolve_model
from rubric_pipeline.retrieval.store import load_index, save_index

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "DenseIndex", "encode", "load_encoder", "resolve_model", "top_k"]

EMBEDDINGS_FILE = "embeddings.npy"
IVF_FILE = "ivf.faiss"
QUERY_BLOCK = 512  # queries scored per matrix product: bounds the (block x passages) score matrix
ANN_KINDS = ("exact", "ivf")
TRAIN_POINTS_PER_LIST = 64  # k-means sample: faiss wants >= 39 points per list


def top_k(query_embeddings: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: ``(indices, scores)`` each ``(n_queries, k)``, best first."""
    k = min(k, matrix.shape[0])
    all_indices, all_scores = [], []
    for start in range(0, query_embeddings.shape[0], QUERY_BLOCK):
        scores = query_embeddings[start : start + QUERY_BLOCK] @ matrix.T
        if k < scores.shape[1]:
            candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            candidates = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        candidate_scores = np.take_along_axis(scores, candidates, axis=1)
        order = np.argsort(-candidate_scores, axis=1, kind="stable")
        all_indices.append(np.take_along_axis(candidates, order, axis=1))
        all_scores.append(np.take_along_axis(candidate_scores, order, axis=1))
    if not all_indices:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(all_indices), np.concatenate(all_scores)


def default_nlist(n_passages: int) -> int:
    """About 4 * sqrt(n) lists, with at least 39 training points per list."""
    return max(1, min(int(4 * math.sqrt(n_passages)), n_passages // 39))


def build_ivf(embeddings: np.ndarray, nlist: int = 0, seed: int = 0) -> Any:
    """A trained and filled faiss ``IndexIVFFlat`` (inner product) over ``embeddings``."""
    import faiss

    n, dim = embeddings.shape
    nlist = nlist or default_nlist(n)
    sample = min(n, nlist * TRAIN_POINTS_PER_LIST)
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if sample < n else None
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(np.ascontiguousarray(embeddings if rows is None else embeddings[rows]))
    for start in range(0, n, 262_144):  # add in slices: a memory-mapped matrix is read once, in order
        index.add(np.ascontiguousarray(embeddings[start : start + 262_144]))
    logger.info("IVF index: %d passages in %d lists", n, nlist)
    return index


class DenseIndex:
    """Passages embedded once; ``search`` encodes a batch of queries and ranks by cosine similarity.

    ``model`` names the encoder (see :mod:`rubric_pipeline.retrieval.encoders`); ``ann`` picks exact or
    IVF search; ``nlist`` (0: about 4 * sqrt(n)) and ``nprobe`` tune the IVF index.
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        *,
        model: str | None = None,
        batch_size: int = 64,
        show_progress: bool = True,
        device: str = "cpu",
        ann: Literal["exact", "ivf"] = "exact",
        nlist: int = 0,
        nprobe: int = 32,
        _embeddings: np.ndarray | None = None,
        _ivf: Any = None,
    ) -> None:
        if not passages:
            raise ValueError("cannot index an empty passage list")
        if ann not in ANN_KINDS:
            raise ValueError(f"unknown dense index {ann!r}; choose from {ANN_KINDS}")
        if nprobe < 1 or nlist < 0:
            raise ValueError(f"nprobe must be >= 1 and nlist >= 0, got nprobe={nprobe}, nlist={nlist}")
        self.passages = list(passages)
        self.model = model or DEFAULT_MODEL
        self.batch_size, self.device, self.ann, self.nprobe = batch_size, device, ann, nprobe
        if _embeddings is None:
            texts = [index_text(passage) for passage in self.passages]
            _embeddings = encode(texts, self.model, batch_size, show_progress, device)
            logger.info("dense index (%s): %d passages, dim %d", self.model, *_embeddings.shape)
        self.embeddings = _embeddings
        if ann == "ivf" and _ivf is None:
            _ivf = build_ivf(self.embeddings, nlist)
        self.ivf = _ivf

    def __len__(self) -> int:
        return len(self.passages)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return encode(queries, self.model, self.batch_size, False, self.device)

    def top_k(
        self, query_embeddings: np.ndarray, k: int, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the top ``k``; with IVF, a row may end in -1 (fewer than k found)."""
        if self.ivf is None or exact:
            return top_k(query_embeddings, self.embeddings, k)
        self.ivf.nprobe = self.nprobe
        scores, indices = self.ivf.search(np.ascontiguousarray(query_embeddings), min(k, len(self)))
        return indices, scores

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        query_embeddings: np.ndarray | None = None,
        exact: bool = False,
    ) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query by cosine similarity, best first (``exact`` skips the IVF index)."""
        if not queries:
            return []
        if query_embeddings is None:
            query_embeddings = self.encode_queries(queries)
        return to_hits(self.passages, *self.top_k(query_embeddings, k, exact))

    def save(self, directory: str | Path, with_passages: bool = True, fingerprint: str | None = None) -> Path:
        """Write ``embeddings.npy`` (and ``ivf.faiss`` with IVF) plus the shared meta under ``directory``."""

        def write(path: Path) -> None:
            np.save(path / EMBEDDINGS_FILE, np.asarray(self.embeddings, dtype=np.float32))
            if self.ivf is not None:
                import faiss

                faiss.write_index(self.ivf, str(path / IVF_FILE))

        return save_index(
            directory,
            "dense",
            self.passages,
            write,
            with_passages=with_passages,
            fingerprint=fingerprint,
            model=self.model,
            dim=int(self.embeddings.shape[1]),
            normalized=True,
            ann=self.ann,
            nlist=int(self.ivf.nlist) if self.ivf is not None else 0,
            nprobe=self.nprobe,
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        mmap: bool = False,
        batch_size: int = 64,
        device: str = "cpu",
        passages: Sequence[Passage] | None = None,
        nprobe: int | None = None,
    ) -> DenseIndex:
        """Load an index written by :meth:`save`; ``mmap`` maps the matrix and the IVF lists from disk."""
        directory = Path(directory)
        meta, passages = load_index(directory, "dense", passages)
        ann = meta.get("ann", "exact")
        # with an IVF index the matrix only serves exact re-checks: always map it, never read it whole
        embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r" if mmap or ann == "ivf" else None)
        if embeddings.shape != (len(passages), meta["dim"]):
            raise ValueError(
                f"{directory}: embeddings of shape {embeddings.shape} for {len(passages)} passages "
                f"of dim {meta['dim']}"
            )
        ivf = None
        if ann == "ivf":
            import faiss

            ivf = faiss.read_index(str(directory / IVF_FILE), faiss.IO_FLAG_MMAP if mmap else 0)
            if ivf.ntotal != len(passages):
                raise ValueError(f"{directory}: {IVF_FILE} holds {ivf.ntotal} vectors, not {len(passages)}")
        return cls(
            passages,
            model=meta["model"],
            batch_size=batch_size,
            device=device,
            ann=ann,
            nprobe=nprobe or meta.get("nprobe", 32),
            _embeddings=embeddings,
            _ivf=ivf,
        )
