"""TRL, verl and OpenRLHF adapters against the live gateway (real vLLM, real HTTP, real TRL)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import httpx
import pytest

from verifier.integrations.openrlhf import get_reward, rubrics_label
from verifier.integrations.trl import RubricReward, message_text
from verifier.integrations.verl import compute_score, compute_score_sync
from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.contract import STAT_KEYS
from verifier.serve.gateway import BackgroundServer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
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
async def test_verl_compute_score_returns_scalars_only(gateway):
    result = await compute_score(
        "rubric_qa",
        "The Sella, mapped in 1821.",
        json.dumps(RUBRICS),
        {"question": "Which river?"},
        url=gateway.url,
    )
    assert set(result) == {"score", *STAT_KEYS, "gateway_error"}
    assert all(isinstance(value, float) for value in result.values()), result
    assert 0.0 <= result["score"] <= 1.0 and result["judged"] == 1.0 and result["n_rubrics"] == 3.0
    # unjudgeable: the documented default score, flagged, never raised into the training loop
    default = await compute_score("rubric_qa", "An answer.", [], None, url=gateway.url)
    assert default["score"] == 0.0 and default["unjudgeable"] == 1.0 and set(default) == set(result)
    fallback = await compute_score(
        "rubric_qa", "An answer.", "[]", None, url=gateway.url, unjudgeable_score=-1
    )
    assert fallback["score"] == -1.0 and fallback["unjudgeable"] == 1.0 and fallback["judged"] == 0.0
    with pytest.raises(KeyError, match="url"):
        await compute_score("rubric_qa", "An answer.", RUBRICS)
    with pytest.raises(ValueError, match=r"rubric_qa: reward_model\.ground_truth"):
        await compute_score("rubric_qa", "An answer.", 7, url=gateway.url)


@pytest.mark.vllm
def test_verl_sync_variant_for_the_remote_manager(gateway):
    import asyncio

    assert not asyncio.iscoroutinefunction(compute_score_sync)  # verl's remote manager asserts this
    results = [
        compute_score_sync("rubric_qa", "The Sella.", RUBRICS, None, url=gateway.url) for _ in range(2)
    ]
    assert all(r["judged"] == 1.0 and set(r) == {"score", *STAT_KEYS, "gateway_error"} for r in results)


async def test_verl_gateway_timeout_is_flagged_not_raised():
    """A gateway that accepts the connection and never answers: a real read timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = await compute_score("rubric_qa", "An answer.", RUBRICS, None, url=url, timeout=0.5)
    assert result["score"] == 0.0 and result["unjudgeable"] == 1.0 and result["gateway_error"] == 1.0
    assert result["n_rubrics"] == 3.0 and set(result) >= {"score", *STAT_KEYS}


def test_adapters_import_without_the_toolkit_stack():
    """What RL environments install: the adapters pull in httpx, not torch, transformers or the server."""
    import subprocess
    import sys

    code = (
        "import sys, verifier.integrations.verl, verifier.integrations.trl, verifier.integrations.openrlhf\n"
        "heavy = ('torch', 'transformers', 'fastapi', 'prometheus_client', 'numpy', 'yaml', 'trl')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.vllm
async def test_openrlhf_request_round_trip(gateway):
    prompt = "Question: Which river flows through Varn?\nAnswer: "
    answer = await get_reward(
        f"{gateway.url}/get_reward", [prompt + "The Sella river."], [prompt], [rubrics_label(RUBRICS)]
    )
    assert len(answer["rewards"]) == 1 and 0.0 <= answer["rewards"][0] <= 1.0
    assert answer["extra_logs"]["judged"] == [1.0] and set(STAT_KEYS) <= set(answer["extra_logs"])
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


@pytest.mark.vllm
@pytest.mark.parametrize("fallback", [None, -1.0])
async def test_openrlhf_unjudgeable_samples_get_a_float_and_a_flag(vllm_server, fallback):
    """The engine answers 404 for an unknown model name: a real engine error, never a silent reward."""
    overrides = {} if fallback is None else {"unjudgeable_reward": fallback}
    config = ServeConfig(engine_url=[vllm_server.url], engine_retries=0, **overrides)
    fallback = 0.0 if fallback is None else fallback  # the documented default
    app = build_app(config, [vllm_server.base_url], "no-such-model")
    prompt = "Question: Which river flows through Varn?\nAnswer: "
    with BackgroundServer(app) as broken:
        answer = await get_reward(
            f"{broken.url}/get_reward",
            [prompt + "The Sella river.", prompt + "The Sella.", prompt + "..."],
            [prompt] * 3,
            [rubrics_label(RUBRICS), "[]", rubrics_label(RUBRICS)],
        )
        metrics = httpx.get(f"{broken.url}/metrics", timeout=10).text
    assert answer["rewards"] == [fallback, fallback, 0.0] and answer["scores"] == answer["rewards"]
    logs = answer["extra_logs"]
    assert logs["unjudgeable"] == [1.0, 1.0, 0.0] and logs["judged"] == [0.0, 0.0, 0.0]
    assert logs["unjudgeable/engine_error"] == [1.0, 0.0, 0.0]
    assert logs["unjudgeable/no_rubrics"] == [0.0, 1.0, 0.0]
    assert logs["degenerate"] == [0.0, 0.0, 1.0]
    assert re.search(r'^rv_unjudgeable_total\{reason="engine_error"\} 1\.0$', metrics, re.M)
    assert re.search(r'^rv_unjudgeable_total\{reason="no_rubrics"\} 1\.0$', metrics, re.M)


def test_openrlhf_example_sets_a_float_for_unjudgeable_samples():
    script = (EXAMPLES / "openrlhf.sh").read_text()
    assert "--unjudgeable-reward" in script


async def test_client_retries_a_refused_connection_then_raises(caplog):
    from verifier.integrations._client import post_judge
    from verifier.serve.engine import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        caplog.at_level("WARNING", logger="verifier.integrations._client"),
        pytest.raises(httpx.ConnectError),
    ):
        await post_judge(
            url, [{"question": "q", "response": "r", "rubrics": ["a"]}], retries=2, backoff_s=0.01
        )
    assert [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records] == ["1/2", "2/2"]


@pytest.mark.vllm
async def test_client_waits_out_a_full_gateway_queue(vllm_server, caplog):
    """The gateway answers 503 + Retry-After while its queue is full; the client comes back and gets 200."""
    import asyncio

    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.integrations._client import post_judge
    from verifier.judge.judges import LLMJudge
    from verifier.serve.gateway import create_app
    from verifier.serve.service import Limits, RewardService

    async with LLMClient(LLMConfig([vllm_server.base_url], vllm_server.model_name)) as llm:
        service = RewardService(LLMJudge(llm), limits=Limits(max_queued_windows=1))
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

            async def hold_the_queue() -> None:
                async with service.slot():
                    await asyncio.sleep(0.5)

            holder = asyncio.create_task(hold_the_queue())
            await asyncio.sleep(0)
            with caplog.at_level("WARNING", logger="verifier.integrations._client"):
                item = {"question": "q", "response": "an answer", "rubrics": RUBRICS}
                (result,) = await post_judge("http://gateway", [item], client=client, backoff_s=0.01)
            await holder
    assert len(result["labels"]) == 3 and result["reward"] is not None
    assert any("busy; retry 1/" in r.getMessage() for r in caplog.records)


@pytest.mark.vllm
async def test_client_does_not_retry_a_4xx(gateway, caplog):
    from verifier.integrations._client import GatewayError, post_judge

    with (
        caplog.at_level("WARNING", logger="verifier.integrations._client"),
        pytest.raises(GatewayError) as err,
    ):
        await post_judge(gateway.url, [{"question": "q", "response": "r"}])  # no rubrics field: 422
    assert err.value.status == 422
    assert not [r for r in caplog.records if r.name == "verifier.integrations._client"]  # no retry


def test_one_pooled_client_per_event_loop():
    import asyncio

    from verifier.integrations._client import pooled_client

    async def twice():
        return pooled_client(), pooled_client()

    first, second = asyncio.run(twice())
    assert first is second
    other, _ = asyncio.run(twice())
    assert other is not first  # a new loop gets its own (an httpx client is bound to its loop)


@pytest.mark.vllm
async def test_trl_reward_splits_batches_over_the_gateway_item_limit(vllm_server):
    from verifier.integrations._client import GatewayError

    config = ServeConfig(engine_url=[vllm_server.url], max_items=2)
    with BackgroundServer(build_app(config, [vllm_server.base_url], vllm_server.model_name)) as small:
        prompts, completions = ["Which river?"] * 5, [f"The Sella, answer {i}." for i in range(5)]
        logged = {}
        before = judge_requests(small.url)
        reward = RubricReward(small.url, max_items=2)
        rewards = await reward(
            prompts, completions, rubrics=[RUBRICS] * 5, log_metric=lambda k, v: logged.__setitem__(k, v)
        )
        assert len(rewards) == 5 and all(0.0 <= r <= 1.0 for r in rewards)
        assert judge_requests(small.url) - before == 3  # 2 + 2 + 1
        assert set(logged) == {
            f"rubric_reward/{k}" for k in ("unjudgeable_frac", "support_rate", "vital_coverage", "latency_s")
        }
        with pytest.raises(GatewayError, match="413"):  # what an unsplit batch gets
            await RubricReward(small.url, max_items=256)(prompts, completions, rubrics=[RUBRICS] * 5)


async def test_trl_reward_gives_none_when_the_gateway_never_answers():
    """A gateway that accepts the connection and never answers: the batch is skipped, not the run."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        reward = RubricReward(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        logged = {}
        rewards = await reward(["q"] * 2, ["a", "b"], rubrics=[RUBRICS] * 2, log_metric=logged.__setitem__)
    assert rewards == [None, None] and logged["rubric_reward/unjudgeable_frac"] == 1.0
