"""Rubric-level classification metrics (``sklearn.metrics``) and score agreement.

Labels are compared as strings from :data:`rubric_pipeline.core.records.LABELS`; the confusion matrix is
indexed ``[gold][predicted]`` in that order. A label never predicted scores precision 0 (sklearn's
``zero_division=0``), so a judge that ignores a label is not rewarded with a NaN. sklearn and scipy are
imported on first use (seconds), so ``rubric-verifier eval --help`` stays quick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rubric_pipeline.core.records import LABELS


def _checked(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> None:
    """sklearn drops pairs whose labels are not in ``labels``; here that is an error naming the pair."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    known = set(labels)
    for g, p in zip(gold, pred, strict=True):
        if g not in known or p not in known:
            raise ValueError(f"unknown label in pair ({g!r}, {p!r}); expected one of {list(labels)}")


def confusion_matrix(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS
) -> list[list[int]]:
    """Counts ``matrix[i][j]`` of rubrics with gold label ``labels[i]`` predicted as ``labels[j]``."""
    _checked(gold, pred, labels)
    if not gold:
        return [[0] * len(labels) for _ in labels]
    from sklearn import metrics

    return metrics.confusion_matrix(list(gold), list(pred), labels=list(labels)).tolist()


def classification_report(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """Per-label precision/recall/F1/support, macro-F1 (unweighted over ``labels``), accuracy, confusion."""
    matrix = confusion_matrix(gold, pred, labels)
    if gold:
        from sklearn import metrics

        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            list(gold), list(pred), labels=list(labels), zero_division=0
        )
        accuracy = metrics.accuracy_score(list(gold), list(pred))
    else:  # nothing judged: every figure 0 rather than sklearn's error on empty input
        precision = recall = f1 = support = [0] * len(labels)
        accuracy = 0.0
    per_label = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "n": len(gold),
        "accuracy": float(accuracy),
        "macro_f1": math.fsum(stats["f1"] for stats in per_label.values()) / len(labels),
        "per_label": per_label,
        "confusion": {"labels": list(labels), "matrix": matrix},
    }


def macro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS) -> float:
    return classification_report(gold, pred, labels)["macro_f1"]


def macro_f1_rows(gold: np.ndarray, pred: np.ndarray, n_labels: int = len(LABELS)) -> np.ndarray:
    """Macro-F1 over the label indices ``0..n_labels-1`` (0/0 counting 0) of every row of ``pred``
    (``(k, n)``) against ``gold`` (``(n,)``): sklearn's ``f1_score(average="macro", zero_division=0)``
    per row, in one ``precision_recall_fscore_support`` call. Row ``k``'s labels are offset by
    ``n_labels * k``, so the per-label F1 of the stacked problem is each row's per-label F1 (a call per row
    spends milliseconds validating its input, which grid searches over thousands of rows feel). Callers
    bound ``k * n``."""
    from sklearn.metrics import precision_recall_fscore_support

    gold, pred = np.asarray(gold), np.atleast_2d(np.asarray(pred))
    offset = n_labels * np.arange(len(pred))[:, None]
    _, _, f1, _ = precision_recall_fscore_support(
        (offset + gold).ravel(),
        (offset + pred).ravel(),
        labels=np.arange(n_labels * len(pred)),
        zero_division=0,
    )
    return f1.reshape(-1, n_labels).mean(axis=1)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when undefined (fewer than 2 points or a constant series)."""
    if len(x) < 2 or len(x) != len(y) or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import pearsonr

    return float(pearsonr(list(x), list(y)).statistic)


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
