"""verl 0.9.1's own reward path (Hydra config, reward-loop worker on Ray, naive and remote reward managers,
key stacking, validation metrics) against the live gateway, in verl's environment."""

from __future__ import annotations

import pytest

from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.contract import STAT_KEYS
from verifier.serve.gateway import BackgroundServer


@pytest.fixture(scope="module")
def gateway(vllm_server):
    config = ServeConfig(engine_url=[vllm_server.url])
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        yield server


@pytest.fixture(scope="module")
def verl_run(gateway, tiny_model_dir, run_driver, repo_root) -> dict:
    """Both reward managers in one Ray session (Ray's start dominates the time)."""
    return run_driver(
        "verl", "verl_driver.py", "--gateway", gateway.url, "--model", str(tiny_model_dir),
        "--manager", "naive,remote", "--example", str(repo_root / "examples" / "verl.sh"),
    )  # fmt: skip


@pytest.mark.vllm
@pytest.mark.parametrize("manager", ["naive", "remote"])
def test_verl_reward_loop_scores_a_mixed_batch(verl_run, manager):
    out = verl_run[manager]
    infos = out["infos"]
    # every key verl stacked is a number for every sample: judgeable (3 and 1 rubrics), no vital rubric,
    # degenerate, unjudgeable
    assert set(out["keys"]) == {"score", *STAT_KEYS, "gateway_error"}
    assert all(dtype == "float64" for dtype in out["dtypes"].values()), out["dtypes"]
    assert infos["n_rubrics"] == [3.0, 1.0, 1.0, 3.0, 0.0]
    assert infos["judged"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert infos["degenerate"] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert infos["unjudgeable"] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert infos["gateway_error"] == [0.0] * 5
    assert all(0.0 <= s <= 1.0 for s in infos["score"][:3]) and infos["score"][3:] == [0.0, 0.0]
    assert infos["reward"] == pytest.approx(infos["score"])  # rm_scores carry the score at the last token
    assert infos["vital_coverage"][2] == 0.0  # no vital rubric: defined, flagged by n_rubrics/judged
    assert all(v > 0 for v in infos["latency_s"][:3])
    metrics = out["metrics"]
    assert set(metrics) == {"reward", *out["keys"]}
    assert metrics["reward"]["mean@1"] == pytest.approx(sum(infos["score"]) / 5)
    assert metrics["unjudgeable"]["mean@1"] == pytest.approx(0.2)
