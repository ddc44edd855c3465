"""The reward gateway against the real vLLM CPU server serving the tiny model, over real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rubric_pipeline.core.records import LABELS, Rubric
from rubric_pipeline.core.server import BackgroundServer
from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.gateway import create_app
from verifier.serve.launch import serve_command, wait_healthy
from verifier.serve.openrlhf import split_response
from verifier.serve.service import Limits, RewardService

QUESTION = "Which river flows through the city of Varn?"
RESPONSE = "The Sella river flows through Varn and was first mapped in 1821 by the surveyor Ima Tork."
RUBRICS = [f"The response says fact number {i} about Varn." for i in range(12)]


def engine_requests(engine_url: str) -> float:
    """Finished requests the engine has counted (vLLM's Prometheus counter, summed over labels)."""
    text = httpx.get(f"{engine_url}/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.M))


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            rest = line[len(name) :]
            if rest[:1] in ("{", " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def gateway(vllm_server):
    """The gateway exactly as `rubric-verifier serve --engine-url` builds it, on a free port."""
    config = ServeConfig(engine_url=[vllm_server.url], max_items=64)
    app = build_app(config, [vllm_server.base_url], vllm_server.model_name)
    with BackgroundServer(app) as server:
        yield server


@pytest.mark.vllm
def test_judge_returns_labels_and_rewards_in_item_order(gateway):
    from verifier.judge.reward import aggregate

    rich = [
        {"text": "The response names the Sella river.", "importance": "vital"},
        {"text": "It gives a year.", "importance": "okay", "weight": 2.0},
    ]
    body = {
        "items": [
            {"question": QUESTION, "response": RESPONSE, "rubrics": RUBRICS},  # 2 windows: 10 + 2
            {"question": QUESTION, "response": RESPONSE + " It is long.", "rubrics": rich},
            {"question": QUESTION, "response": RESPONSE, "rubrics": RUBRICS[:1]},
        ]
    }
    response = httpx.post(f"{gateway.url}/v1/judge", json=body, timeout=60)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [len(r["labels"]) for r in results] == [12, 2, 1]
    for result, item in zip(results, body["items"], strict=True):
        assert set(result["labels"]) <= set(LABELS) and result["error"] is None
        rubrics = [Rubric.from_dict(r, i) for i, r in enumerate(item["rubrics"])]
        assert result["reward"] == pytest.approx(aggregate(result["labels"], rubrics))
    strict = httpx.post(
        f"{gateway.url}/v1/judge", json=body | {"aggregation": "strict_all"}, timeout=60
    ).json()
    assert [len(r["labels"]) for r in strict["results"]] == [12, 2, 1]


@pytest.mark.vllm
def test_degenerate_responses_score_zero_without_an_engine_call(gateway, vllm_server):
    before = engine_requests(vllm_server.url)
    items = [
        {"question": QUESTION, "response": text, "rubrics": RUBRICS}
        for text in ("", " :", "Thought process:")
    ]
    response = httpx.post(f"{gateway.url}/v1/judge", json={"items": items}, timeout=30)
    assert response.status_code == 200
    for result in response.json()["results"]:
        shown = {key: result[key] for key in ("labels", "reward", "error", "reason", "probs")}
        assert shown == {"labels": None, "reward": 0.0, "error": None, "reason": "degenerate", "probs": None}
        assert set(result) == set(shown) | {"stats"}
    assert engine_requests(vllm_server.url) == before
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert metric(text, "rv_judgements_total", outcome="degenerate") >= 3


@pytest.mark.vllm
def test_get_reward_speaks_openrlhf(gateway):
    from verifier.integrations.openrlhf import rubrics_label

    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    body = {
        "query": [prompt + RESPONSE, prompt + "..."],
        "prompts": [prompt, prompt],
        "labels": [
            rubrics_label(RUBRICS[:3]),
            rubrics_label([{"text": "Names the river.", "importance": "okay"}]),
        ],
    }
    answer = httpx.post(f"{gateway.url}/get_reward", json=body, timeout=60).json()
    assert set(answer) == {"rewards", "scores", "extra_logs"}
    assert len(answer["rewards"]) == 2 and answer["rewards"] == answer["scores"]
    assert 0.0 <= answer["rewards"][0] <= 1.0
    assert answer["rewards"][1] == 0.0  # "..." is degenerate once the prompt prefix is stripped
    logs = answer["extra_logs"]
    assert logs["judged"] == [1.0, 0.0] and logs["degenerate"] == [0.0, 1.0]
    assert logs["unjudgeable"] == [0.0, 0.0]
    assert all(values == [0.0, 0.0] for key, values in logs.items() if key.startswith("unjudgeable/"))
    empty = httpx.post(
        f"{gateway.url}/get_reward", json={"query": [], "prompts": [], "labels": []}, timeout=10
    )
    assert empty.status_code == 200 and empty.json() == {"rewards": [], "scores": [], "extra_logs": {}}


def test_response_is_the_query_minus_its_prompt():
    assert split_response("PROMPT answer", "PROMPT ") == "answer"
    assert split_response("PROMPT answer<|im_end|>\n<|endoftext|>", "PROMPT ") == "answer"
    long_prompt = "<|im_start|>user\nWhich river flows through Varn?<|im_end|>\n<|im_start|>assistant\n"
    assert split_response(long_prompt[30:] + "The Sella.", long_prompt) == "The Sella."  # left-truncated
    # neither the prompt nor an end of it starts the query: no answer is made up from prompt + answer
    assert split_response("answer only", "other prompt") is None
    assert split_response("t\nThe Sella.", long_prompt) is None  # a 2-character overlap is a coincidence


@pytest.mark.vllm
def test_invalid_bodies_get_422_naming_the_field(gateway):
    missing = httpx.post(
        f"{gateway.url}/v1/judge", json={"items": [{"response": "x", "rubrics": []}]}, timeout=10
    )
    assert missing.status_code == 422
    assert ["body", "items", 0, "question"] in [d["loc"] for d in missing.json()["detail"]]
    bad = {"question": "q", "response": "r", "rubrics": [{"text": "t", "importance": "crucial"}]}
    wrong = httpx.post(f"{gateway.url}/v1/judge", json={"items": [bad], "aggregation": "mean"}, timeout=10)
    locs = [d["loc"] for d in wrong.json()["detail"]]
    assert wrong.status_code == 422 and ["body", "aggregation"] in locs
    assert any(loc[:4] == ["body", "items", 0, "rubrics"] and "importance" in loc for loc in locs)
    labels = {"query": ["q a"], "prompts": ["q "], "labels": ["not json"]}
    openrlhf = httpx.post(f"{gateway.url}/get_reward", json=labels, timeout=10)
    assert openrlhf.status_code == 422 and openrlhf.json()["detail"][0]["loc"] == ["body", "labels", 0]
    ragged = httpx.post(
        f"{gateway.url}/get_reward", json={"query": ["a"], "prompts": [], "labels": []}, timeout=10
    )
    assert ragged.status_code == 422 and "differ in length" in ragged.json()["detail"][0]["msg"]


@pytest.mark.vllm
def test_health_and_prometheus_metrics(gateway, vllm_server):
    health = httpx.get(f"{gateway.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["engines"] == {vllm_server.base_url: "ok"}
    httpx.post(
        f"{gateway.url}/v1/judge", json={"items": [{"question": "q", "response": "r a b", "rubrics": []}]}
    )
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert metric(text, "rv_requests_total", endpoint="/v1/judge", status="200") >= 1
    assert metric(text, "rv_unjudgeable_total", reason="no_rubrics") >= 1
    assert metric(text, "rv_request_latency_seconds_count", endpoint="/v1/judge") >= 1
    assert "rv_engine_errors_total" in text or "# TYPE rv_engine_errors counter" in text


@pytest.fixture
async def service(vllm_server):
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge

    async with LLMClient(LLMConfig([vllm_server.base_url], vllm_server.model_name)) as client:
        yield RewardService(
            LLMJudge(client), limits=Limits(max_items=2, max_rubrics=3, max_chars=200, max_queued_windows=1)
        )


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.vllm
async def test_size_limits_answer_413_with_the_limit(service):
    item = {"question": "q", "response": "an answer", "rubrics": ["a", "b"]}
    async with asgi_client(create_app(service)) as client:
        too_many = await client.post("/v1/judge", json={"items": [item] * 3})
        assert too_many.status_code == 413 and "3 items" in too_many.json()["detail"]
        rubrics = await client.post("/v1/judge", json={"items": [item | {"rubrics": ["a"] * 4}]})
        assert rubrics.status_code == 413 and "items[0] has 4 rubrics" in rubrics.json()["detail"]
        chars = await client.post("/v1/judge", json={"items": [item | {"response": "x" * 300}]})
        assert chars.status_code == 413 and "characters" in chars.json()["detail"]
        assert (await client.post("/v1/judge", json={"items": [item]})).status_code == 200


@pytest.mark.vllm
async def test_full_queue_answers_503_then_recovers(service):
    item = {"question": "q", "response": "an answer", "rubrics": ["a"]}
    async with asgi_client(create_app(service)) as client:
        async with service.slot():  # the one window place is taken
            busy = await client.post("/v1/judge", json={"items": [item]})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert (await client.post("/v1/judge", json={"items": [item]})).status_code == 200
        assert service.inflight == 0


@pytest.mark.vllm
async def test_bearer_token_is_required_when_set(service):
    item = {"question": "q", "response": "an answer", "rubrics": ["a"]}
    async with asgi_client(create_app(service, token="s3cret")) as client:
        assert (await client.post("/v1/judge", json={"items": [item]})).status_code == 401
        wrong = await client.post(
            "/v1/judge", json={"items": [item]}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = await client.post(
            "/v1/judge", json={"items": [item]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert right.status_code == 200 and right.json()["results"][0]["reward"] is not None
        # auth is checked before the body: an invalid body without a token is still 401, not 422
        assert (await client.post("/get_reward", json={"query": 1})).status_code == 401


@pytest.mark.vllm
def test_serve_cli_uses_running_engine_and_stops_on_sigterm(vllm_server, tmp_path):
    from verifier.serve.engine import free_port

    port = free_port()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"serve:\n  port: {port}\n  window: 5\n")
    command = [
        sys.executable,
        "-m",
        "verifier.cli",
        "serve",
        "--recipe",
        str(recipe),
        "--engine-url",
        vllm_server.url,
    ]
    env = os.environ | {"RV_SERVE_TOKEN": "t"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()
            time.sleep(0.2)
        item = {"question": QUESTION, "response": RESPONSE, "rubrics": RUBRICS[:7]}
        response = httpx.post(
            f"{url}/v1/judge", json={"items": [item]}, headers={"Authorization": "Bearer t"}
        )
        assert len(response.json()["results"][0]["labels"]) == 7
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.mark.vllm
@pytest.mark.slow
def test_engine_killed_mid_request_gives_unjudgeable_results_then_recovers(tiny_model_dir, tmp_path: Path):
    from verifier.serve.engine import EngineConfig, VLLMEngine, free_port

    port = free_port()
    engine_config = EngineConfig(model=str(tiny_model_dir), port=port, log_path=str(tmp_path / "a.log"))
    engine = VLLMEngine(engine_config).start()
    config = ServeConfig(engine_url=[engine.url], engine_retries=1, engine_timeout_s=10)
    try:
        with BackgroundServer(build_app(config, [engine.base_url], engine.model_name)) as gateway:
            items = [
                {"question": QUESTION, "response": f"{RESPONSE} ({i})", "rubrics": RUBRICS}
                for i in range(200)
            ]
            answer: dict = {}
            request = threading.Thread(
                target=lambda: answer.update(
                    httpx.post(f"{gateway.url}/v1/judge", json={"items": items}, timeout=120).json()
                )
            )
            request.start()
            time.sleep(0.3)
            engine.kill()
            request.join(timeout=120)
            results = answer["results"]
            failed = [r for r in results if r["reward"] is None]
            assert failed, "killing the engine should leave some items unjudgeable"
            assert all(r["reason"] == "engine_error" and r["error"] and r["labels"] is None for r in failed)
            assert all(r["labels"] is not None for r in results if r["reward"] is not None)  # no silent zeros
            deadline = time.monotonic() + 15  # the supervisor needs two failed probes (1 s apart)
            while (health := httpx.get(f"{gateway.url}/health", timeout=10)).status_code != 503:
                assert time.monotonic() < deadline, health.json()
                time.sleep(0.2)
            assert health.json()["status"] == "unavailable"  # no engine can judge: a balancer routes away
            metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
            assert metric(metrics, "rv_engine_errors_total", kind="engine_error") == len(failed)
            assert metric(metrics, "rv_unjudgeable_total", reason="engine_error") == len(failed)

            engine = VLLMEngine(
                EngineConfig(model=str(tiny_model_dir), port=port, log_path=str(tmp_path / "b.log"))
            )
            engine.start()
            deadline = time.monotonic() + 15  # back in rotation after one good probe
            while httpx.get(f"{gateway.url}/health", timeout=10).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            again = httpx.post(f"{gateway.url}/v1/judge", json={"items": items[:2]}, timeout=60).json()
            assert all(len(r["labels"]) == 12 and r["reward"] is not None for r in again["results"])
            assert httpx.get(f"{gateway.url}/health", timeout=10).json()["status"] == "ok"
    finally:
        engine.stop()


def test_serve_flags_override_the_recipe_and_engine_url_repeats(tmp_path):
    from rubric_pipeline.core.config import build_config
    from verifier.cli import build_parser

    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"serve": {"window": 4, "port": 1, "engine_url": ["http://h:1"]}}))
    argv = [
        "serve",
        "--recipe",
        str(recipe),
        "--port",
        "9",
        "--engine-url",
        "http://a:1",
        "--engine-url",
        "http://b:2",
    ]
    args = build_parser("serve").parse_args(argv)
    config = build_config(ServeConfig, args.recipe, "serve", args)
    assert (config.window, config.port, config.engine_url) == (4, 9, ["http://a:1", "http://b:2"])


@pytest.mark.vllm
@pytest.mark.slow
def test_serve_cli_starts_and_stops_its_own_engine(tiny_model_dir, tmp_path):
    from verifier.serve.engine import free_port

    port, engine_port = free_port(), free_port()
    flags = ["--model", str(tiny_model_dir), "--port", str(port), "--engine-port", str(engine_port)]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(serve_command(*flags), stdout=log, stderr=log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 240, tmp_path / "serve.log")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "ok"
        item = {"question": QUESTION, "response": RESPONSE, "rubrics": RUBRICS[:3]}
        result = httpx.post(f"http://127.0.0.1:{port}/v1/judge", json={"items": [item]}, timeout=60).json()
        assert len(result["results"][0]["labels"]) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    with pytest.raises(httpx.ConnectError):  # the engine went down with the gateway
        httpx.get(f"http://127.0.0.1:{engine_port}/health", timeout=2)


@pytest.mark.vllm
def test_readme_curl_example_works_as_written(gateway):
    """No Content-Type of its own (curl -d sends a form type): the body is still read as JSON."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    (command,) = re.findall(r"^curl -s 127\.0\.0\.1:8080/v1/judge .*$", readme, re.M)
    command = command.replace("127.0.0.1:8080", f"{gateway.host}:{gateway.port}")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
    (result,) = json.loads(out.stdout)["results"]
    assert result["reward"] == 0.0 and result["reason"] == "degenerate"  # "..." is a degenerate response
    assert set(result["stats"]) >= {"support_rate", "vital_coverage", "unjudgeable", "latency_s"}


@pytest.mark.vllm
async def test_many_single_sample_requests_are_all_admitted(gateway):
    """RL traffic: hundreds of one-sample requests at once; the window bound admits them all."""
    import asyncio

    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        body = {"items": [{"question": QUESTION, "response": RESPONSE, "rubrics": RUBRICS[:3]}]}
        url = f"{gateway.url}/v1/judge"
        answers = await asyncio.gather(*(client.post(url, json=body) for _ in range(300)))
    assert [a.status_code for a in answers] == [200] * 300
    assert all(a.json()["results"][0]["reward"] is not None for a in answers)


@pytest.mark.vllm
def test_a_client_that_hangs_up_stops_its_judging(gateway):
    """An RL worker whose timeout fired has gone: the gateway cancels its work instead of finishing it."""
    before = metric(httpx.get(f"{gateway.url}/metrics").text, "rv_abandoned_requests_total")
    # enough work to outlast the read timeout on a fast CPU too (64 items of one window each took under 1 s on
    # an AMX one): 64 items, the gateway's limit, of four 10-rubric windows each
    rubrics = [f"The response names fact {i} of the river." for i in range(40)]
    items = [{"question": "Which river?", "response": f"Sella {k}.", "rubrics": rubrics} for k in range(64)]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/judge", json={"items": items}, timeout=httpx.Timeout(10, read=0.5))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{gateway.url}/metrics").text
        if metric(text, "rv_abandoned_requests_total") > before and metric(text, "rv_inflight_requests") == 0:
            break
        time.sleep(0.5)
    assert metric(text, "rv_abandoned_requests_total") == before + 1
    assert metric(text, "rv_inflight_requests") == 0 and metric(text, "rv_queued_windows") == 0
