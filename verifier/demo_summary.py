"""The demo's summary: the figures of every step, rendered for the terminal (and the served answers'
reward and support recall, plain and calibrated)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def served_complete(served: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Reward and support recall of the complete held-out answers scored through ``/v1/judge``."""
    items = [item for item in served if item.get("gold") is not None]
    if not items:
        return None
    rewards = [item["result"]["reward"] for item in items if item["result"]["reward"] is not None]
    gold_support = hits = 0
    for item in items:
        labels = item["result"]["labels"] or [None] * len(item["gold"])
        for gold, label in zip(item["gold"], labels, strict=True):
            gold_support += gold == "support"
            hits += gold == "support" and label == "support"
    return {
        "answers": len(items),
        "unjudgeable": len(items) - len(rewards),
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        "min_reward": min(rewards) if rewards else None,
        "support_recall": hits / gold_support if gold_support else None,
    }


def render_summary(summary: dict[str, Any]) -> str:
    lines = ["", "=" * 78, "demo summary", "=" * 78]
    for key, title in (("build_offline", "rubrics, offline"), ("build_gemma", "rubrics, Gemma-3-270M")):
        stats = summary.get(key)
        if stats:
            scores = stats.get("scores", {})
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in stats.get("stage_seconds", {}).items())
            lines.append(
                f"{title:24s} questions {stats['questions']:3d}  rubrics {stats['rubrics']:4d}  "
                f"recall@10 {_fmt(scores.get('recall@10'))}  "
                f"rubric recall {_fmt(scores.get('rubric_recall'))}  "
                f"precision {_fmt(scores.get('rubric_precision'))} "
                f"(cosine >= {scores.get('match_threshold')})"
            )
            lines.append(f"{'':24s} stage wall time: {stages}")
    for key, title in (("eval_zero_shot", "judge, zero-shot"), ("eval_sft", "judge, after SFT")):
        report = summary.get(key)
        if report:
            labels, keys = report["labels"], report.get("master_key", {})
            recall = labels.get("per_label", {}).get("support", {}).get("recall")
            lines.append(
                f"{title:24s} macro-F1 {_fmt(labels['macro_f1'])}  accuracy {_fmt(labels['accuracy'])}  "
                f"unjudgeable {labels['unjudgeable']['rubrics']}"
            )
            # Side by side, so that a verifier that labels everything not_support cannot pass for robust.
            lines.append(
                f"{'':24s} master-key FPR, guard off (held-out families) {_fmt(keys.get('fpr'))}  "
                f"beside support recall on real answers {_fmt(recall)}"
            )
    served = summary.get("served", [])
    for item in served:
        result = item["result"]
        reward = "None" if result["reward"] is None else f"{result['reward']:.3f}"
        lines.append(f"served: {item['kind'][:40]:40s} reward {reward:>6s}  labels {result['labels']}")
    calibration = summary.get("calibration")
    if calibration:
        lines.append(
            f"calibration (bias, {calibration['rubrics']} training rubrics): macro-F1 "
            f"{_fmt(calibration['argmax_macro_f1'])} -> {_fmt(calibration['fit_macro_f1'])} (in-sample), "
            f"biases {', '.join(f'{k} {v:+.1f}' for k, v in calibration['params'].items())}"
        )
    for key, how in (("served", ""), ("served_calibrated", ", calibrated")):
        complete = served_complete(summary.get(key, []))
        if complete:
            lines.append(
                f"served complete answers of held-out questions ({complete['answers']}{how}): mean reward "
                f"{_fmt(complete['mean_reward'])} (min {_fmt(complete['min_reward'])}), support recall "
                f"{_fmt(complete['support_recall'])}, unjudgeable {complete['unjudgeable']}"
            )
    lines.append(
        "steps (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in summary.get("steps", []))
    )
    return "\n".join(lines)
