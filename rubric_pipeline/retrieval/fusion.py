"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

RRF_K = 60


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Fuse ranked lists of ids: ``score(d) = sum over lists of 1 / (k + rank(d))``, ranks from 1.

    Returns ``(id, score)`` best first; ties keep the order in which ids were first seen. An id repeated
    within one list counts at its best rank only.
    """
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        seen: set[Hashable] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    # sorted() is stable, so equal scores stay in first-seen (dict insertion) order
    return sorted(scores.items(), key=lambda pair: -pair[1])


def rrf_arrays(
    rankings: Sequence[np.ndarray], k: int = RRF_K, top: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rrf` for a batch, vectorised: each ranking holds ``(n_queries, depth_i)`` ids, best first,
    -1 padded.

    Returns ``(ids, scores)`` of shape ``(n_queries, top)``, -1 padded: the same ids, scores and tie order
    as :func:`rrf` on each query's lists (ids must be unique within one list, as an index's top-k is).
    """
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    n = rankings[0].shape[0]
    ids = np.concatenate([np.asarray(r, dtype=np.int64) for r in rankings], axis=1)
    weights = np.concatenate([1.0 / (k + np.arange(1, r.shape[1] + 1)) for r in rankings])
    rows, positions = np.nonzero(ids >= 0)  # row-major: per query, the first list first, in rank order
    docs = ids[rows, positions]
    keys = rows * (int(ids.max(initial=0)) + 1) + docs
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    scores = np.bincount(inverse, weights=weights[positions], minlength=len(unique))  # summed in list order
    unique_rows = rows[first]
    order = np.lexsort((positions[first], -scores, unique_rows))  # by query, best score, first seen
    sorted_rows = unique_rows[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_rows, np.arange(n))[sorted_rows]
    keep = rank < top
    out_ids = np.full((n, top), -1, dtype=np.int64)
    out_scores = np.zeros((n, top), dtype=np.float64)
    out_ids[sorted_rows[keep], rank[keep]] = docs[first][order][keep]
    out_scores[sorted_rows[keep], rank[keep]] = scores[order][keep]
    return out_ids, out_scores
