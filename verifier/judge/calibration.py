"""Label probabilities from the served verifier's logprobs, and label decisions calibrated on dev.

:func:`label_probs` reads, for each label of a constrained JSON output (``["support","not_support"]``),
the ``top_logprobs`` of the token where that label starts. The three labels begin with different letters
(s / p / n), so a candidate token maps to a label by what it adds after the text the chosen token had
before the label (``["`` or nothing): ``support`` and ``su`` both map to support, ``"`` or ``]`` to none.
That needs no tokenizer: it works with any vocabulary whose token strings the server returns.

:class:`Calibration` turns a distribution into a label with parameters fitted on a dev split by
maximising macro-F1 (``bias``: add a per-label log-bias, then take the argmax; ``score``: two thresholds on
the expected score, as the lexical judge has; ``mixed``: two thresholds on a weighted mean of the expected
score and the rubric's word recall in the response, :func:`~verifier.judge.hints.word_recall`, the weight
fitted too). It is saved as ``calibration.json`` in the model folder,
where ``rubric-verifier serve --model DIR`` finds it (``"calibrated": true`` on ``/v1/judge``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from rubric_pipeline.core.records import LABEL_SCORES, LABELS
from verifier.eval.metrics import macro_f1_rows

CALIBRATION_FILE = "calibration.json"
_QUOTED_LABEL = re.compile(r'"(' + "|".join(sorted(LABELS, key=len, reverse=True)) + r')"')
_FLOOR = 1e-6  # log(0) guard for the bias method

LabelProbs = dict[str, float]
Method = Literal["bias", "score", "mixed"]
METHODS: tuple[str, ...] = get_args(Method)
WORD_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the ``mixed`` method's grid


class ProbsUnavailable(ValueError):
    """The logprobs of an output do not let its labels' distributions be read (the message says why)."""


def _label_of(candidate: str, lead: str) -> str | None:
    """The label a candidate token starts, given the text ``lead`` the output had before the label."""
    if not candidate.startswith(lead):
        return None
    rest = candidate[len(lead) :].lower()
    if not rest:
        return None
    for label in LABELS:
        if label.startswith(rest) or rest.startswith(label):
            return label
    return None


def label_probs(logprob_content: Sequence[dict[str, Any]], n: int) -> list[LabelProbs]:
    """Per-label distributions of the ``n`` labels in a JSON-array output, from OpenAI-style
    ``logprobs.content`` entries (``token``, ``logprob``, ``top_logprobs``). Mass on tokens that start no
    label is dropped and the rest renormalised; when no candidate starts a label, the chosen label gets 1."""
    tokens = [str(entry.get("token", "")) for entry in logprob_content]
    text = "".join(tokens)
    matches = list(_QUOTED_LABEL.finditer(text))
    if len(matches) != n:
        raise ProbsUnavailable(f"expected {n} quoted labels in the logprob tokens, found {len(matches)}")
    ends = np.cumsum([len(token) for token in tokens])
    result = []
    for match in matches:
        start = match.start(1)
        index = int(np.searchsorted(ends, start, side="right"))
        entry = logprob_content[index]
        token_start = int(ends[index]) - len(tokens[index])
        lead = text[token_start:start]
        candidates = {str(c.get("token", "")): float(c["logprob"]) for c in entry.get("top_logprobs") or ()}
        candidates.setdefault(tokens[index], float(entry.get("logprob", 0.0)))
        mass = dict.fromkeys(LABELS, 0.0)
        for token, logprob in candidates.items():
            label = _label_of(token, lead)
            if label is not None and logprob > -math.inf:
                mass[label] += math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            mass, total = {label: float(label == match.group(1)) for label in LABELS}, 1.0
        result.append({label: mass[label] / total for label in LABELS})
    return result


def mean_probs(samples: Sequence[Sequence[LabelProbs]]) -> list[LabelProbs]:
    """Per-rubric mean of several samples' distributions."""
    return [
        {label: sum(s[label] for s in column) / len(column) for label in LABELS}
        for column in zip(*samples, strict=True)
    ]


def expected_score(probs: LabelProbs, strict: bool = False) -> float:
    """support 1, partial 0.5 (0 when ``strict``), not 0, weighted by the distribution."""
    if strict:
        return probs["support"]
    return sum(LABEL_SCORES[label] * probs[label] for label in LABELS)


def argmax_label(probs: LabelProbs) -> str:
    return max(LABELS, key=lambda label: probs[label])


def probs_matrix(rows: Sequence[LabelProbs]) -> np.ndarray:
    """``(n, 3)`` array in :data:`LABELS` order."""
    return np.array([[row[label] for label in LABELS] for row in rows], dtype=float).reshape(-1, len(LABELS))


@dataclass
class Calibration:
    """Label decisions from distributions: ``bias`` (argmax of log p + bias), ``score`` thresholds, or
    ``mixed`` thresholds on the expected score blended with word recall (``word_weight`` of the latter)."""

    method: Method = "bias"
    params: dict[str, float] = field(default_factory=dict)
    fit_macro_f1: float | None = None
    fitted_on: str = ""
    rubrics: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_word_recall(self) -> bool:
        """Whether decisions also need each rubric's word recall in the response (``mixed``)."""
        return self.method == "mixed"

    def predict_indices(self, matrix: np.ndarray, word_recall: np.ndarray | None = None) -> np.ndarray:
        if self.method == "bias":
            bias = np.array([self.params.get(label, 0.0) for label in LABELS])
            return np.argmax(np.log(np.maximum(matrix, _FLOOR)) + bias, axis=1)
        if self.method in ("score", "mixed"):
            scores = matrix @ np.array([LABEL_SCORES[label] for label in LABELS])
            if self.method == "mixed":
                if word_recall is None or len(word_recall) != len(scores):
                    raise ValueError("a 'mixed' calibration needs one word recall per rubric")
                weight = self.params["word_weight"]
                scores = (1.0 - weight) * scores + weight * np.asarray(word_recall, dtype=float)
            support, partial = self.params["support"], self.params["partial"]
            index = {label: i for i, label in enumerate(LABELS)}
            return np.where(
                scores >= support,
                index["support"],
                np.where(scores >= partial, index["partial_support"], index["not_support"]),
            )
        raise ValueError(f"unknown calibration method {self.method!r}; expected one of {list(METHODS)}")

    def labels(self, probs: Sequence[LabelProbs], word_recall: Sequence[float] | None = None) -> list[str]:
        """Labels of ``probs`` (``word_recall``: one per rubric, for a ``mixed`` calibration)."""
        if not probs:
            return []
        recall = None if word_recall is None else np.asarray(word_recall, dtype=float)
        return [LABELS[i] for i in self.predict_indices(probs_matrix(probs), recall)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            calibration = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a calibration file ({exc})") from exc
        calibration.predict_indices(np.full((1, len(LABELS)), 1 / len(LABELS)), np.zeros(1))  # checks params
        return calibration


def find_calibration(model_dir: str | Path | None) -> Calibration | None:
    """The ``calibration.json`` shipped in a model folder, or None."""
    if not model_dir:
        return None
    path = Path(model_dir) / CALIBRATION_FILE
    return Calibration.load(path) if path.is_file() else None


def fit_calibration(
    probs: Sequence[LabelProbs],
    gold: Sequence[str],
    method: Method = "bias",
    grid: int = 41,
    fitted_on: str = "",
    word_recall: Sequence[float] | None = None,
) -> Calibration:
    """Parameters maximising macro-F1 of the decisions on ``(probs, gold)``: a dev split, never test.
    ``mixed`` needs ``word_recall`` (one per rubric) and also picks its weight from :data:`WORD_WEIGHTS`."""
    if len(probs) != len(gold) or not probs:
        raise ValueError(f"fit_calibration: {len(probs)} distributions for {len(gold)} gold labels")
    matrix = probs_matrix(probs)
    gold_index = np.array([LABELS.index(label) for label in gold])
    if method == "mixed":
        if word_recall is None or len(word_recall) != len(gold):
            raise ValueError("fit_calibration: 'mixed' needs one word recall per rubric")
        recall = np.asarray(word_recall, dtype=float)
        expected = matrix @ np.array([LABEL_SCORES[label] for label in LABELS])
        fits = []
        for weight in WORD_WEIGHTS:
            blended = (1.0 - weight) * expected + weight * recall
            cuts = _cuts(blended, grid)
            candidates = [{"support": s, "partial": p, "word_weight": weight} for p, s in cuts]
            f1 = _grid_macro_f1(matrix, gold_index, method, candidates, recall)
            top = int(np.argmax(f1))
            fits.append((float(f1[top]), candidates[top]))
        best_f1, best = max(fits, key=lambda fit: fit[0])  # the first best weight on ties
        return Calibration(method, best, best_f1, fitted_on, len(gold))
    if method == "bias":
        values = np.linspace(-8.0, 8.0, grid)
        candidates = [
            {"support": 0.0, "partial_support": float(partial), "not_support": float(not_support)}
            for partial in values
            for not_support in values
        ]
    elif method == "score":
        scores = matrix @ np.array([LABEL_SCORES[label] for label in LABELS])
        candidates = [{"support": s, "partial": p} for p, s in _cuts(scores, grid)]
    else:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")
    f1 = _grid_macro_f1(matrix, gold_index, method, candidates)
    top = int(np.argmax(f1))  # the first best candidate, in grid order
    return Calibration(method, candidates[top], float(f1[top]), fitted_on, len(gold))


def _cuts(scores: np.ndarray, grid: int) -> list[tuple[float, float]]:
    """Every (partial, support) threshold pair, partial <= support, among ``2 * grid`` quantiles of the
    scores (inf: never predict that label)."""
    cuts = np.unique(np.quantile(scores, np.linspace(0, 1, grid * 2), method="lower"))
    cuts = np.concatenate([cuts, [np.inf]])
    return [(float(partial), float(support)) for i, partial in enumerate(cuts) for support in cuts[i:]]


def _grid_macro_f1(
    matrix: np.ndarray,
    gold_index: np.ndarray,
    method: Method,
    candidates: Sequence[dict[str, float]],
    word_recall: np.ndarray | None = None,
    block: int = 2_000_000,
) -> np.ndarray:
    """Macro-F1 of every candidate's decisions, scored a block of candidates per sklearn call."""
    per_block = max(1, block // max(1, len(gold_index)))
    out = []
    for start in range(0, len(candidates), per_block):
        pred = np.stack(
            [
                Calibration(method, params).predict_indices(matrix, word_recall)
                for params in candidates[start : start + per_block]
            ]
        )
        out.append(macro_f1_rows(gold_index, pred, len(LABELS)))
    return np.concatenate(out)


def cross_validated_labels(
    probs: Sequence[LabelProbs],
    gold: Sequence[str],
    groups: Sequence[str],
    method: Method = "bias",
    n_splits: int = 9,
    word_recall: Sequence[float] | None = None,
) -> list[str]:
    """Out-of-fold calibrated labels: each fold of topics is decided by a calibration fitted on the others
    (``GroupKFold``), so the macro-F1 of the result estimates calibration on unseen topics."""
    from sklearn.model_selection import GroupKFold

    matrix = probs_matrix(probs)
    recall = None if word_recall is None else np.asarray(word_recall, dtype=float)
    predicted = np.zeros(len(gold), dtype=int)
    folds = GroupKFold(n_splits=min(n_splits, len(set(groups))))
    for train, held in folds.split(matrix, groups=list(groups)):
        fitted = fit_calibration(
            [probs[i] for i in train],
            [gold[i] for i in train],
            method,
            word_recall=None if recall is None else recall[train],
        )
        predicted[held] = fitted.predict_indices(matrix[held], None if recall is None else recall[held])
    return [LABELS[i] for i in predicted]
