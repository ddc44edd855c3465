"""Scores against known gold: retrieval recall@k of gold passages, rubric recall/precision vs gold nuggets.

A rubric matches a gold nugget when the cosine similarity of their all-MiniLM-L6-v2 embeddings is at least
``threshold`` (default :data:`MATCH_THRESHOLD`). Recall is the share of gold nuggets matched by some rubric,
precision the share of rubrics matching some gold nugget; both are macro-averaged over questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MATCH_THRESHOLD = 0.7


def recall_at_k(
    retrieved: Mapping[str, Sequence[str]], gold: Mapping[str, Sequence[str]], k: int = 10
) -> float | None:
    """Mean over questions with gold of |top-k ∩ gold| / |gold|; ``None`` when no question has gold."""
    values = [
        len(set(retrieved.get(qid, [])[:k]) & set(passages)) / len(set(passages))
        for qid, passages in gold.items()
        if passages
    ]
    return sum(values) / len(values) if values else None


def rubric_scores(
    rubrics: Mapping[str, Sequence[str]],
    gold: Mapping[str, Sequence[str]],
    threshold: float = MATCH_THRESHOLD,
    model_path: str | None = None,
) -> dict[str, float | int | None]:
    """Macro recall/precision of rubric texts against gold nugget texts (questions with gold only).

    A question with gold but no rubrics counts recall 0 and is left out of precision.
    """
    from rubric_pipeline.merge import embed

    recalls: list[float] = []
    precisions: list[float] = []
    for qid, gold_texts in gold.items():
        if not gold_texts:
            continue
        texts = list(rubrics.get(qid, []))
        if not texts:
            recalls.append(0.0)
            continue
        vectors = embed(texts + list(gold_texts), model_path)
        similarity = vectors[: len(texts)] @ vectors[len(texts) :].T
        matched = similarity >= threshold
        recalls.append(float(matched.any(axis=0).mean()))
        precisions.append(float(matched.any(axis=1).mean()))
    return {
        "rubric_recall": sum(recalls) / len(recalls) if recalls else None,
        "rubric_precision": sum(precisions) / len(precisions) if precisions else None,
        "match_threshold": threshold,
        "questions_scored": len(recalls),
    }
