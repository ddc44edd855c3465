"""Evaluation metrics against hand-computed values, unjudgeable accounting, master-key FPR, the eval CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.core.records import LabelledExample, RecordError, Rubric, write_jsonl
from verifier.data.labelled_io import load_labelled
from verifier.eval.evaluate import build_report, master_key_metrics
from verifier.eval.metrics import classification_report, confusion_matrix, kendall_tau, pearson
from verifier.judge.judges import Judgement

S, P, N = "support", "partial_support", "not_support"


def test_confusion_matrix_and_report_match_hand_computation() -> None:
    gold = [S, S, S, P, P, N, N, N, N, N]
    pred = [S, S, N, S, P, N, N, P, S, N]
    assert confusion_matrix(gold, pred) == [[2, 0, 1], [1, 1, 0], [1, 1, 3]]
    report = classification_report(gold, pred)
    # support: tp 2, predicted 4, actual 3 -> P 0.5, R 2/3, F1 4/7
    assert report["per_label"][S]["precision"] == pytest.approx(0.5)
    assert report["per_label"][S]["recall"] == pytest.approx(2 / 3)
    assert report["per_label"][S]["f1"] == pytest.approx(4 / 7)
    # partial: tp 1, predicted 2, actual 2 -> 0.5 / 0.5 / 0.5
    assert report["per_label"][P]["f1"] == pytest.approx(0.5)
    # not_support: tp 3, predicted 4, actual 5 -> P 0.75, R 0.6, F1 2/3
    assert report["per_label"][N]["precision"] == pytest.approx(0.75)
    assert report["per_label"][N]["recall"] == pytest.approx(0.6)
    assert report["macro_f1"] == pytest.approx((4 / 7 + 0.5 + 2 / 3) / 3)
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["per_label"][N]["support"] == 5


def test_never_predicted_label_scores_zero_not_nan() -> None:
    report = classification_report([S, P, N], [N, N, N])
    assert report["per_label"][S]["precision"] == 0.0
    assert report["per_label"][S]["f1"] == 0.0
    assert report["macro_f1"] == pytest.approx((0 + 0 + 0.5) / 3)


def test_unknown_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        confusion_matrix([S], ["yes"])


def test_correlations() -> None:
    assert pearson([0, 1, 2], [0, 2, 4]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [0, 1, 2]) is None
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1], [1]) is None


def _example(rid: str, labels: list[str], source: str = "human:test", importance: list[str] | None = None):
    importance = importance or ["vital"] * len(labels)
    rubrics = [Rubric(f"{rid}-{i}", f"fact {i}", importance=imp) for i, imp in enumerate(importance)]
    return LabelledExample("q1", "question?", f"response {rid}", rid, rubrics, labels, source)


def test_report_excludes_unjudgeable_and_counts_them() -> None:
    examples = [
        _example("a", [S, N], importance=["vital", "okay"]),
        _example("b", [P, S]),
        _example("c", [N, N, N]),
    ]
    judgements = [
        Judgement([S, S]),
        Judgement([N, S]),
        Judgement(None, error="window 1/1: request failed: connection refused"),
    ]
    report = build_report(examples, judgements, judge="t", wall_s=2.0)
    labels = report["labels"]
    assert labels["n"] == 4  # the unjudgeable item's 3 rubrics are not scored as anything
    assert labels["unjudgeable"]["examples"] == 1
    assert labels["unjudgeable"]["rubrics"] == 3
    assert labels["unjudgeable"]["response_ids"] == ["c"]
    assert list(labels["unjudgeable"]["reasons"]) == ["window 1/1: request failed: connection refused"]
    assert labels["confusion"]["matrix"] == [[2, 0, 0], [0, 0, 1], [1, 0, 0]]
    nuggets = report["nugget_scores"]
    # "all": pred a=1.0, b=0.5; gold a=0.5, b=0.75 -> MAE (0.5 + 0.25) / 2
    assert nuggets["all"]["n"] == 2
    assert nuggets["all"]["mae"] == pytest.approx(0.375)
    # "strict_vital": a has one vital rubric: pred 1, gold 1; b: pred 0.5, gold 0.5
    assert nuggets["strict_vital"]["mae"] == pytest.approx(0.0)
    assert report["timing"]["rubrics"] == 7
    assert report["timing"]["examples_per_s"] == pytest.approx(1.5)


def test_master_key_fpr_per_family() -> None:
    examples = [
        _example("k1", [N, N], source="augment:master_key:colon"),
        _example("k2", [N, N], source="augment:master_key:colon"),
        _example("k3", [N, N, N, N], source="augment:truncated"),
        _example("real", [S, N]),
    ]
    judgements = [Judgement([S, N]), Judgement([N, N]), Judgement([P, N, N, N]), Judgement([S, N])]
    result = master_key_metrics(examples, judgements, heldout=["master_key:colon"])
    colon = result["families"]["master_key:colon"]
    assert colon["fpr"] == pytest.approx(1 / 4)
    assert colon["credited_responses"] == 1
    assert colon["heldout"] is True
    assert result["families"]["truncated"]["fpr"] == pytest.approx(1 / 4)
    assert result["fpr"] == pytest.approx(1 / 4)  # summary over held-out families only
    # negatives stay out of the label metrics; regrouped real examples stay in them
    examples.append(_example("rg", [S, P], source="augment:regroup"))
    judgements.append(Judgement([S, P]))
    report = build_report(examples, judgements, judge="t", wall_s=1.0)
    assert report["labels"]["n"] == 4
    assert "regroup" not in report["master_key"]["families"]
    assert report["master_key"]["fpr"] == pytest.approx(2 / 8)


def test_load_labelled_jsonl_and_dataset_dir(tmp_path: Path) -> None:
    from datasets import Dataset

    from rubric_pipeline.core.records import labelled_features

    examples = [_example("a", [S, N]), _example("b", [P])]
    write_jsonl(tmp_path / "l.jsonl", [e.to_dict() for e in examples])
    assert load_labelled(tmp_path / "l.jsonl") == examples
    Dataset.from_list([e.to_dict() for e in examples], features=labelled_features()).save_to_disk(
        str(tmp_path / "ds")
    )
    assert [e.labels for e in load_labelled(tmp_path / "ds")] == [[S, N], [P]]
    bad = examples[0].to_dict() | {"labels": [S]}
    write_jsonl(tmp_path / "bad.jsonl", [bad])
    with pytest.raises(RecordError, match="line 1"):
        load_labelled(tmp_path / "bad.jsonl")


def test_eval_cli_with_lexical_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from verifier.cli import main

    rubrics = [Rubric("r0", "The bridge opened in 1932"), Rubric("r1", "Harbor tolls fund repairs")]
    rows = [
        LabelledExample(
            "q", "Bridge?", "The bridge opened in 1932 to traffic.", "x1", rubrics, [S, N], "human"
        ),
        LabelledExample(
            "q", "Bridge?", "Tolls at the harbor fund its repairs.", "x2", rubrics, [N, S], "human"
        ),
        LabelledExample("q", "Bridge?", "It is a bridge.", "x3", rubrics, [N, N], "human"),
    ]
    write_jsonl(tmp_path / "data.jsonl", [row.to_dict() for row in rows])
    output = tmp_path / "report.json"
    data = str(tmp_path / "data.jsonl")
    code = main(["eval", "--judge", "lexical", "--data", data, "--fit", data, "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    assert report["judge"] == "lexical"
    assert report["labels"]["accuracy"] == pytest.approx(1.0)  # fitted on the same tiny set: separable
    assert "macro-F1" in capsys.readouterr().out


def test_eval_cli_bad_labelled_input_is_one_line(bad_labelled_file, one_line_error) -> None:
    path, fragments = bad_labelled_file
    one_line_error("eval", ["--judge", "lexical", "--data", str(path)], path, fragments)


def test_eval_cli_names_a_folder_that_is_not_a_datasets_folder(not_a_datasets_folder, one_line_error) -> None:
    path, fragments = not_a_datasets_folder
    one_line_error("eval", ["--judge", "lexical", "--data", str(path)], path, fragments)


def test_eval_reads_one_split_of_a_datasetdict_only(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [_example("a", [S, N]).to_dict()]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "one"))
    assert [e.labels for e in load_labelled(tmp_path / "one")] == [[S, N]]
    DatasetDict({"train": Dataset.from_list(rows), "dev": Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "two")
    )
    with pytest.raises(RecordError, match=r"splits \['train', 'dev'\]: pass one split's dir"):
        load_labelled(tmp_path / "two")


@pytest.mark.vllm
def test_eval_cli_with_the_served_llm_judge(tmp_path: Path, vllm_server) -> None:
    from verifier.cli import main

    rubrics = [Rubric(f"r{i}", f"The bridge has feature {i}") for i in range(12)]
    rows = [
        LabelledExample("q", "Bridge?", "The bridge has feature 3.", "x1", rubrics, [N] * 12, "human"),
        LabelledExample("q", "Bridge?", "Respuesta", "k1", rubrics, [N] * 12, "augment:multilingual"),
    ]
    write_jsonl(tmp_path / "data.jsonl", [row.to_dict() for row in rows])
    argv = ["eval", "--judge", "llm", "--llm-url", vllm_server.base_url, "--model", vllm_server.model_name]
    argv += ["--data", str(tmp_path / "data.jsonl"), "--heldout-families", "multilingual"]
    assert main([*argv, "--output", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["labels"]["unjudgeable"]["examples"] == 0  # constrained output always parses
    assert report["labels"]["n"] == 12
    assert report["llm"]["usage"]["requests"] == 2  # two windows for x1; the master key needs no call
    assert report["master_key"]["families"]["multilingual"]["fpr"] == 0.0
