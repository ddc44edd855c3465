"""The stage-2 RL training reward (Search-Gen-V): how well a completion reproduces the teacher labels."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from rubric_pipeline.core.records import LABELS
from verifier.judge.prompt import ParseError, complies, parse_labels

RL_WEIGHTS = {"macro_f1": 0.35, "exact_match": 0.35, "reasoning_format": 0.2, "output_format": 0.1}
_REASONING_BLOCK = re.compile(r"^\s*<reasoning>(.+?)</reasoning>", re.DOTALL)


def macro_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Macro-F1 over the labels present in either sequence (absent labels would make a perfect score < 1)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted labels for {len(reference)} reference labels")
    classes = sorted(set(predicted) | set(reference))
    if not classes:
        return 0.0
    total = 0.0
    for cls in classes:
        tp = sum(p == cls and r == cls for p, r in zip(predicted, reference, strict=True))
        fp = sum(p == cls and r != cls for p, r in zip(predicted, reference, strict=True))
        fn = sum(p != cls and r == cls for p, r in zip(predicted, reference, strict=True))
        total += 2 * tp / (2 * tp + fp + fn)
    return total / len(classes)


def has_reasoning_block(completion: str) -> bool:
    """A single well-formed, non-empty ``<reasoning>...</reasoning>`` block that opens the completion."""
    match = _REASONING_BLOCK.match(completion)
    return (
        match is not None
        and bool(match.group(1).strip())
        and completion.count("<reasoning>") == 1
        and completion.count("</reasoning>") == 1
    )


def rl_reward(completion: str, teacher_labels: Sequence[str], requested_format: str = "json") -> float:
    """Search-Gen-V stage-2 reward in [0, 1]: 0.35 macro-F1 + 0.35 exact match + 0.2 reasoning tag +
    0.1 output-format compliance; 0 when the completion does not parse into ``len(teacher_labels)`` labels.

    A 0 here is a genuine training signal for the policy (it produced no usable judgement).
    """
    unknown = sorted(set(teacher_labels) - set(LABELS))
    if unknown or not teacher_labels:
        raise ValueError(
            f"teacher labels must be a non-empty list of {list(LABELS)}, got {list(teacher_labels)}"
        )
    try:
        parsed = parse_labels(completion, len(teacher_labels))
    except ParseError:
        return 0.0
    predicted = list(parsed.labels)
    parts = {
        "macro_f1": macro_f1(predicted, teacher_labels),
        "exact_match": float(predicted == list(teacher_labels)),
        "reasoning_format": float(has_reasoning_block(completion)),
        "output_format": float(complies(parsed, requested_format)),
    }
    return math.fsum(RL_WEIGHTS[name] * value for name, value in parts.items())
