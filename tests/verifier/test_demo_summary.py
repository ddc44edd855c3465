from __future__ import annotations

from verifier.demo import render_summary


def test_summary_renders_eval_reports_and_served_results():
    report = {
        "labels": {"macro_f1": 0.5, "accuracy": 0.75, "unjudgeable": {"rubrics": 3, "examples": 1}},
        "master_key": {"fpr": 0.25},
    }
    served = [{"kind": "master key ':'", "result": {"reward": 0.0, "labels": None}},
              {"kind": "q1-complete", "result": {"reward": None, "labels": None}}]  # fmt: skip
    text = render_summary({"eval_sft": report, "served": served, "steps": [("build", 3.0)]})
    assert "macro-F1 0.500" in text and "unjudgeable 3" in text and "FPR (held-out families) 0.250" in text
    assert "reward  0.000" in text and "reward   None" in text and "build 3" in text
