"""The stage-2 RL training reward, as Search-Gen-V computes it: how well a completion reproduces the
teacher labels.

0.35 label F1 + 0.35 exact match + 0.2 reasoning-tag credit + 0.1 output-format compliance, and 0 when the
completion does not parse into as many labels as the teacher gave, when it opens more than one
``<reasoning>`` block, or when the label F1 is 0. The F1 is the mean over all three labels, a label absent
from both the prediction and the reference counting 1 (so a perfect answer scores 1 whatever its labels).
The reasoning credit is 1 for one non-empty ``<reasoning>...</reasoning>`` block followed by the labels, 0.5
for one block that is empty or followed by nothing, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rubric_pipeline.core.records import LABELS
from verifier.judge.prompt import ParseError, complies, parse_labels

RL_WEIGHTS = {"macro_f1": 0.35, "exact_match": 0.35, "reasoning_format": 0.2, "output_format": 0.1}
_OPEN, _CLOSE = "<reasoning>", "</reasoning>"


def macro_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Mean F1 over the three labels; a label absent from both sequences scores 1 (Search-Gen-V)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted labels for {len(reference)} reference labels")
    total = 0.0
    for cls in LABELS:
        tp = sum(p == cls and r == cls for p, r in zip(predicted, reference, strict=True))
        fp = sum(p == cls and r != cls for p, r in zip(predicted, reference, strict=True))
        fn = sum(p != cls and r == cls for p, r in zip(predicted, reference, strict=True))
        total += 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return total / len(LABELS)


def reasoning_credit(completion: str) -> float:
    """1 for one non-empty reasoning block followed by text, 0.5 for one empty or trailing block, else 0."""
    text = completion.strip()
    if text.count(_OPEN) != 1 or text.count(_CLOSE) != 1:
        return 0.0
    start, end = text.index(_OPEN) + len(_OPEN), text.index(_CLOSE)
    if end < start:
        return 0.0
    if not text[start:end].strip() or not text[end + len(_CLOSE) :].strip():
        return 0.5
    return 1.0


def has_reasoning_block(completion: str) -> bool:
    """A single well-formed, non-empty reasoning block that opens the completion (what the prompt asks)."""
    return completion.lstrip().startswith(_OPEN) and reasoning_credit(completion) == 1.0


def rl_reward(completion: str, teacher_labels: Sequence[str], requested_format: str = "json") -> float:
    """Search-Gen-V's stage-2 reward in [0, 1] (module docstring); a 0 is a genuine training signal."""
    unknown = sorted(set(teacher_labels) - set(LABELS))
    if unknown or not teacher_labels:
        raise ValueError(
            f"teacher labels must be a non-empty list of {list(LABELS)}, got {list(teacher_labels)}"
        )
    if completion.count(_OPEN) > 1:
        return 0.0
    try:
        parsed = parse_labels(completion, len(teacher_labels))
    except ParseError:
        return 0.0
    predicted = list(parsed.labels)
    parts = {
        "macro_f1": macro_f1(predicted, teacher_labels),
        "exact_match": float(predicted == list(teacher_labels)),
        "reasoning_format": reasoning_credit(completion),
        "output_format": float(complies(parsed, requested_format)),
    }
    if parts["macro_f1"] == 0.0:
        return 0.0
    return math.fsum(RL_WEIGHTS[name] * value for name, value in parts.items())
