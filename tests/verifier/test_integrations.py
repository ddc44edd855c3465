"""TRL, verl and OpenRLHF adapters against the live gateway (real vLLM, real HTTP, real TRL)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import httpx
import pytest

from rubric_pipeline.schema import LABELS
from verifier.integrations.openrlhf import get_reward, rubrics_label
from verifier.integrations.trl import RubricReward, message_text
from verifier.integrations.verl import Unjudgeable, compute_score
from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.gateway import BackgroundServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUBRICS = ["Names the Sella river.", {"text": "Gives a year.", "importance": "okay"}, "Mentions a surveyor."]


@pytest.fixture(scope="module")
def gateway(vllm_server):
    config = ServeConfig(engine_url=[vllm_server.url])
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as server:
        yield server


def judge_requests(gateway_url: str) -> float:
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    match = re.search(r'^rv_requests_total\{endpoint="/v1/judge",status="200"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_message_text_reads_strings_and_conversations():
    assert message_text("plain") == "plain"
    conversation = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "answer"}]
    assert message_text(conversation, "assistant") == "answer" and message_text(conversation, "user") == "q?"


@pytest.mark.vllm
async def test_trl_reward_reads_the_rubrics_column(gateway):
    reward = RubricReward(gateway.url, rubrics_column="rubrics")
    prompts = [[{"role": "user", "content": "Which river flows through Varn?"}]] * 2
    completions = [
        [{"role": "assistant", "content": "The Sella, mapped in 1821."}],
        [{"role": "assistant", "content": "..."}],
    ]
    rewards = await reward(
        prompts=prompts,
        completions=completions,
        rubrics=[json.dumps(RUBRICS), RUBRICS],
        completion_ids=[[1], [2]],
    )
    assert len(rewards) == 2 and 0.0 <= rewards[0] <= 1.0
    assert rewards[1] == 0.0  # degenerate completion
    with pytest.raises(KeyError, match="nuggets"):
        await RubricReward(gateway.url, rubrics_column="nuggets")(prompts, completions, rubrics=[RUBRICS] * 2)


@pytest.mark.vllm
async def test_trl_reward_returns_none_for_unjudgeable_samples(gateway):
    rewards = await RubricReward(gateway.url)(["q"], ["an answer with words"], rubrics=[[]])
    assert rewards == [None]


@pytest.mark.vllm
async def test_verl_compute_score(gateway):
    result = await compute_score(
        "rubric_qa",
        "The Sella, mapped in 1821.",
        json.dumps(RUBRICS),
        {"question": "Which river?"},
        url=gateway.url,
    )
    assert set(result) == {"score", "labels", "error"} and 0.0 <= result["score"] <= 1.0
    assert len(result["labels"]) == 3 and set(result["labels"]) <= set(LABELS) and result["error"] is None
    with pytest.raises(Unjudgeable, match="no_rubrics"):
        await compute_score("rubric_qa", "An answer.", [], None, url=gateway.url)
    fallback = await compute_score(
        "rubric_qa", "An answer.", "[]", None, url=gateway.url, unjudgeable_score=-1
    )
    assert fallback["score"] == -1.0 and fallback["error"]
    with pytest.raises(KeyError, match="url"):
        await compute_score("rubric_qa", "An answer.", RUBRICS)


@pytest.mark.vllm
async def test_openrlhf_request_round_trip(gateway):
    prompt = "Question: Which river flows through Varn?\nAnswer: "
    answer = await get_reward(
        f"{gateway.url}/get_reward", [prompt + "The Sella river."], [prompt], [rubrics_label(RUBRICS)]
    )
    assert len(answer["rewards"]) == 1 and 0.0 <= answer["rewards"][0] <= 1.0
    assert answer["extra_logs"]["judged"] == [1.0]
    assert await get_reward(f"{gateway.url}/get_reward", [], [], []) == {
        "rewards": [],
        "scores": [],
        "extra_logs": {},
    }


@pytest.mark.vllm
def test_trl_grpo_trainer_runs_with_the_gateway_reward(gateway, tiny_model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("trl_grpo_example", EXAMPLES / "trl_grpo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = judge_requests(gateway.url)
    trainer, reward = example.train(gateway.url, str(tiny_model_dir), str(tmp_path / "grpo"), steps=2)
    assert trainer.state.global_step == 2
    assert reward.calls >= 2 and judge_requests(gateway.url) - before >= 2
    logged = [entry for entry in trainer.state.log_history if "rewards/rubric_reward/mean" in entry]
    assert len(logged) == 2 and all(0.0 <= entry["rewards/rubric_reward/mean"] <= 1.0 for entry in logged)
    assert all(entry["rubric_reward/unjudgeable_frac"] == 0.0 for entry in logged)
