"""`/v1/judge` probability options (return_probs, soft_reward, calibrated) against the real vLLM server."""

from __future__ import annotations

import httpx
import pytest

from rubric_pipeline.core.records import LABELS
from rubric_pipeline.core.server import BackgroundServer
from verifier.judge.calibration import Calibration
from verifier.judge.reward import aggregate
from verifier.serve.cli import ServeConfig, build_app

RUBRICS = [
    {"text": "The response names the Sella river.", "importance": "vital"},
    {"text": "It gives a year.", "importance": "okay", "weight": 2.0},
    "It says who built it.",
]
ITEM = {"question": "Which river?", "response": "The Sella, bridged in 1932.", "rubrics": RUBRICS}


@pytest.fixture(scope="module")
def calibrated_gateway(vllm_server, tmp_path_factory):
    """A gateway whose served model ships a calibration that decides every rubric partial_support."""
    path = Calibration("bias", {"support": 0.0, "partial_support": 50.0, "not_support": 0.0}).save(
        tmp_path_factory.mktemp("calibration")
    )
    config = ServeConfig(engine_url=[vllm_server.url], calibration=str(path))
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        yield server


@pytest.mark.vllm
def test_probs_soft_reward_and_calibrated_labels(calibrated_gateway):
    url = f"{calibrated_gateway.url}/v1/judge"
    plain = httpx.post(url, json={"items": [ITEM]}, timeout=120).json()["results"][0]
    assert plain["probs"] is None and plain["error"] is None, plain

    body = {"items": [ITEM, {**ITEM, "response": ":"}], "return_probs": True}
    judged, degenerate = httpx.post(url, json=body, timeout=120).json()["results"]
    assert judged["labels"] == plain["labels"] and judged["reward"] == pytest.approx(plain["reward"])
    assert len(judged["probs"]) == 3
    assert all(set(p) == set(LABELS) and sum(p.values()) == pytest.approx(1.0) for p in judged["probs"])
    assert degenerate["reward"] == 0.0 and degenerate["reason"] == "degenerate"  # the guard still runs first

    soft = httpx.post(url, json={"items": [ITEM], "soft_reward": True, "return_probs": True}, timeout=120)
    soft = soft.json()["results"][0]
    weights = [1.0, 2.0, 1.0]
    expected = [p["support"] + 0.5 * p["partial_support"] for p in soft["probs"]]
    assert soft["reward"] == pytest.approx(sum(w * e for w, e in zip(weights, expected, strict=True)) / 4)
    assert soft["labels"] == plain["labels"]  # soft_reward changes the reward, not the labels

    calibrated = httpx.post(url, json={"items": [ITEM], "calibrated": True}, timeout=120).json()["results"][0]
    assert calibrated["labels"] == ["partial_support"] * 3
    assert calibrated["reward"] == pytest.approx(aggregate(calibrated["labels"], RUBRICS))


@pytest.mark.vllm
def test_calibrated_without_a_calibration_is_422(vllm_server):
    config = ServeConfig(engine_url=[vllm_server.url])
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        body = {"items": [ITEM], "calibrated": True}
        response = httpx.post(f"{server.url}/v1/judge", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "calibrated"]


@pytest.mark.vllm
def test_mixed_calibration_takes_word_recall_from_the_response(vllm_server, tmp_path):
    # word_weight 1: the rubric's word recall alone decides (0.25, 0, 0 for ITEM), whatever the model says
    params = {"support": 0.9, "partial": 0.2, "word_weight": 1.0}
    path = Calibration("mixed", params).save(tmp_path)
    config = ServeConfig(engine_url=[vllm_server.url], calibration=str(path))
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        body = {"items": [ITEM], "calibrated": True}
        result = httpx.post(f"{server.url}/v1/judge", json=body, timeout=120).json()["results"][0]
    assert result["error"] is None, result
    assert result["labels"] == ["partial_support", "not_support", "not_support"]
