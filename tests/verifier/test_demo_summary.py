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
    assert (
        "macro-F1 0.500" in text
        and "unjudgeable 3" in text
        and "FPR, guard off (held-out families) 0.250" in text
    )
    assert "reward  0.000" in text and "reward   None" in text and "build 3" in text


def test_summary_puts_master_key_fpr_beside_support_recall_and_scores_complete_answers():
    from verifier.demo import served_complete

    collapsed = {
        "labels": {
            "macro_f1": 0.222, "accuracy": 0.5, "unjudgeable": {"rubrics": 0, "examples": 0},
            "per_label": {"support": {"recall": 0.0}},
        },
        "master_key": {"fpr": 0.0},
    }  # fmt: skip
    served = [
        {"kind": "q1-complete", "gold": ["support", "support"],
         "result": {"reward": 0.0, "labels": ["not_support", "not_support"]}},
        {"kind": "q2-complete", "gold": ["support", "support"],
         "result": {"reward": 0.75, "labels": ["support", "partial_support"]}},
        {"kind": "q3-complete", "gold": ["support"], "result": {"reward": None, "labels": None}},
        {"kind": "master key ':'", "result": {"reward": 0.0, "labels": None}},
    ]  # fmt: skip
    complete = served_complete(served)
    assert complete == {
        "answers": 3, "unjudgeable": 1, "mean_reward": 0.375, "min_reward": 0.0, "support_recall": 0.2,
    }  # fmt: skip
    text = render_summary({"eval_sft": collapsed, "served": served})
    assert (
        "master-key FPR, guard off (held-out families) 0.000  beside support recall on real answers 0.000"
        in text
    )
    assert "served complete answers of held-out questions (3): mean reward 0.375 (min 0.000)" in text
    assert "support recall 0.200, unjudgeable 1" in text


@pytest.mark.vllm
def test_demo_calibration_is_fitted_on_training_responses_and_shipped(vllm_server, tmp_path):
    from rubric_pipeline.core.records import iter_jsonl, write_jsonl
    from verifier.judge.calibration import find_calibration

    world = Path(__file__).resolve().parents[2] / "data" / "demo" / "responses.jsonl"
    rows = [record for _, record in iter_jsonl(world)][:6]
    write_jsonl(tmp_path / "out" / "labels" / "train.jsonl", rows)
    demo = Demo(DemoConfig(output=str(tmp_path / "out"), calibration_examples=6), recipe=None)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    stats = demo.calibrate(model_dir, vllm_server.base_url, vllm_server.model_name)
    assert stats["rubrics"] == sum(len(row["labels"]) for row in rows) and stats["unjudgeable_examples"] == 0
    assert stats["fit_macro_f1"] >= stats["argmax_macro_f1"]  # the zero biases are on the grid
    assert find_calibration(model_dir).params == stats["params"]


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
