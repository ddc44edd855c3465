from __future__ import annotations

from pathlib import Path

import pytest

from verifier.demo import WORLD_FILES, Demo, DemoConfig, render_summary


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


def test_demo_generates_its_world_without_a_source_checkout(tmp_path):
    """No world folder given: the seed-0 world is written into OUTPUT/world, the same bytes as data/demo."""
    world = Demo(DemoConfig(output=str(tmp_path / "run")), None).write_world()
    assert world == tmp_path / "run" / "world"
    shipped = Path(__file__).parents[2] / "data" / "demo"
    for name in WORLD_FILES:
        assert (world / name).read_bytes() == (shipped / name).read_bytes(), name
    given = Demo(DemoConfig(output=str(tmp_path / "run2"), world=str(tmp_path / "nowhere")), None)
    with pytest.raises(FileNotFoundError, match=r"nowhere: not a demo world folder \(no corpus.jsonl"):
        given.write_world()
