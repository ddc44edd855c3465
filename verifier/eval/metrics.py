"""Rubric-level classification metrics and score agreement, kept free of heavy imports.

Labels are compared as strings from :data:`rubric_pipeline.core.records.LABELS`; the
confusion matrix is indexed
``[gold][predicted]`` in that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rubric_pipeline.core.records import LABELS


def confusion_matrix(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS
) -> list[list[int]]:
    """Counts ``matrix[i][j]`` of rubrics with gold label ``labels[i]`` predicted as ``labels[j]``."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        if g not in index or p not in index:
            raise ValueError(f"unknown label in pair ({g!r}, {p!r}); expected one of {list(labels)}")
        matrix[index[g]][index[p]] += 1
    return matrix


def _safe_ratio(numerator: float, denominator: float) -> float:
    """0/0 counts as 0 (the sklearn ``zero_division=0`` convention) so a never-predicted label scores 0."""
    return numerator / denominator if denominator else 0.0


def classification_report(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """Per-label precision/recall/F1/support, macro-F1 (unweighted over ``labels``), accuracy, confusion."""
    matrix = confusion_matrix(gold, pred, labels)
    total = sum(map(sum, matrix))
    per_label: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        true_positive = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        precision = _safe_ratio(true_positive, predicted)
        recall = _safe_ratio(true_positive, actual)
        f1 = _safe_ratio(2 * precision * recall, precision + recall)
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {
        "n": total,
        "accuracy": _safe_ratio(correct, total),
        "macro_f1": sum(stats["f1"] for stats in per_label.values()) / len(labels),
        "per_label": per_label,
        "confusion": {"labels": list(labels), "matrix": matrix},
    }


def macro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS) -> float:
    return classification_report(gold, pred, labels)["macro_f1"]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when undefined (fewer than 2 points or a constant series)."""
    n = len(x)
    if n < 2 or n != len(y):
        return None
    mean_x, mean_y = sum(x) / n, sum(y) / n
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    var_x = sum((a - mean_x) ** 2 for a in x)
    var_y = sum((b - mean_y) ** 2 for b in y)
    if var_x == 0 or var_y == 0:
        return None
    return cov / math.sqrt(var_x * var_y)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties handled); None when undefined."""
    if len(x) < 2 or len(x) != len(y):
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(list(x), list(y)).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def score_agreement(pred: Sequence[float], gold: Sequence[float]) -> dict[str, Any]:
    """Mean absolute error, Pearson and Kendall tau between predicted and gold per-response scores."""
    n = len(pred)
    return {
        "n": n,
        "mae": sum(abs(p - g) for p, g in zip(pred, gold, strict=True)) / n if n else None,
        "pearson": pearson(pred, gold),
        "kendall_tau": kendall_tau(pred, gold),
        "mean_pred": sum(pred) / n if n else None,
        "mean_gold": sum(gold) / n if n else None,
    }
