"""OpenRLHF 0.11.2's own code against the live gateway, in OpenRLHF's environment: its argument parser on
examples/openrlhf.sh, and SingleTurnAgentExecutor's remote-reward request (real tokenizer, prompt
truncation, special tokens kept)."""

from __future__ import annotations

import pytest

from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.contract import STAT_KEYS
from verifier.serve.gateway import BackgroundServer


def test_example_flags_parse_with_the_released_parser(run_driver, repo_root, tmp_path):
    args = run_driver(
        "openrlhf", "openrlhf_driver.py", "parse", "--example", str(repo_root / "examples" / "openrlhf.sh"),
        "--actor.model_name_or_path", "some/model", "--data.prompt_data", str(tmp_path / "prompts.jsonl"),
    )  # fmt: skip
    assert args["remote_url"] == "http://127.0.0.1:8080/get_reward"
    assert args["label_key"] == "rubrics" and args["input_key"] == "question" and args["apply_chat_template"]


@pytest.fixture(scope="module")
def tight_gateway(vllm_server):
    """Room for one window at a time and a token: /get_reward must queue, and take the token in its URL."""
    config = ServeConfig(engine_url=[vllm_server.url], max_queued_windows=1, token="s3cret")
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        yield server


@pytest.mark.vllm
def test_openrlhf_executor_gets_float_rewards_and_stacked_logs(tight_gateway, tiny_model_dir, run_driver):
    out = run_driver(
        "openrlhf", "openrlhf_driver.py", "rewards", "--url", f"{tight_gateway.url}/get_reward?token=s3cret",
        "--model", str(tiny_model_dir), "--concurrent", "8",
    )  # fmt: skip
    cases = out["cases"]
    assert out["long_prompt_tokens"] > 12  # the long prompt was really cut from the left
    for name, case in cases.items():
        assert isinstance(case["reward"][0], float), (name, case)  # never null: OpenRLHF makes a tensor
        logs = case["extra_logs"]
        assert set(STAT_KEYS) <= set(logs) and all(isinstance(v[0], float) for v in logs.values()), name
    assert [set(c["extra_logs"]) for c in cases.values()].count(set(cases["answer"]["extra_logs"])) == 4
    answer = cases["answer"]["extra_logs"]
    assert answer["judged"] == [1.0] and answer["n_rubrics"] == [3.0] and answer["latency_s"][0] > 0
    # the response was split off the truncated prompt: "..." alone is degenerate, and no sample was
    # judged as prompt + answer
    assert cases["truncated_degenerate"]["extra_logs"]["degenerate"] == [1.0]
    assert cases["truncated_answer"]["extra_logs"]["judged"] == [1.0]
    assert all(c["extra_logs"]["unjudgeable/prompt_mismatch"] == [0.0] for c in cases.values())
    no_rubrics = cases["no_rubrics"]
    assert no_rubrics["reward"] == [0.0] and no_rubrics["extra_logs"]["unjudgeable/no_rubrics"] == [1.0]
    # eight concurrent samples through a one-window queue: all wait their turn, none gets a 503
    assert len(out["burst"]) == 8 and all(b["extra_logs"]["judged"] == [1.0] for b in out["burst"])
