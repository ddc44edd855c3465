"""The LLM client against the real vLLM CPU server, and a scripted HTTP double for codes vLLM never sends."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rubric_pipeline.core.llm import Completion, LLMClient, LLMConfig, LLMError, structured_outputs
from verifier.serve.engine import free_port

LABELS = ["support", "partial_support", "not_support"]
SCHEMA = {
    "type": "object",
    "properties": {
        "labels": {"type": "array", "items": {"enum": LABELS}, "minItems": 3, "maxItems": 3},
        "confident": {"type": "boolean"},
    },
    "required": ["labels", "confident"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Label each rubric for the response."}]


def valid_for_schema(value: object) -> bool:
    """Hand check of SCHEMA (jsonschema is not a dependency)."""
    return (
        isinstance(value, dict)
        and set(value) == {"labels", "confident"}
        and isinstance(value["confident"], bool)
        and isinstance(value["labels"], list)
        and len(value["labels"]) == 3
        and all(label in LABELS for label in value["labels"])
    )


# --- a scripted OpenAI-compatible double: answers with the next status of a script ---------------------


class ScriptedServer:
    """Local HTTP server returning a scripted status per request (then the last one forever)."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses, self.delay_s, self.hits = list(statuses), delay_s, 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with owner.lock:
                    status = owner.statuses[min(owner.hits, len(owner.statuses) - 1)]
                    owner.hits += 1
                time.sleep(owner.delay_s)
                body = b'{"error": "scripted"}'
                if status == 200:
                    choice = {"index": 0, "text": "ok", "finish_reason": "stop"}
                    usage = {"prompt_tokens": 5, "completion_tokens": 1}
                    body = json.dumps({"choices": [choice], "usage": usage}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def serve(servers: list[ScriptedServer], statuses: list[int], delay_s: float = 0.0) -> ScriptedServer:
    server = ScriptedServer(statuses, delay_s)
    servers.append(server)
    return server


def fast_config(*urls: str, **kwargs: object) -> LLMConfig:
    return LLMConfig(base_urls=list(urls), model="m", backoff_s=0.01, **kwargs)  # type: ignore[arg-type]


async def test_retries_429_and_5xx_then_succeeds(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [429, 503, 500, 200])
    async with LLMClient(fast_config(server.base_url)) as client:
        completion = await client.complete("hi", max_tokens=4)
    assert completion.text == "ok"
    assert server.hits == 4
    assert completion.usage.retries == 3
    assert (client.usage.requests, client.usage.retries, client.usage.failures) == (1, 3, 0)


async def test_no_retry_on_400(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [400, 200])
    async with LLMClient(fast_config(server.base_url)) as client:
        with pytest.raises(LLMError) as info:
            await client.complete("hi")
    assert server.hits == 1
    assert (info.value.status, info.value.attempts) == (400, 1)
    assert server.base_url in str(info.value) and "scripted" in str(info.value)
    assert client.usage.failures == 1


async def test_exhausted_retries_name_url_attempts_and_status(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [503])
    async with LLMClient(fast_config(server.base_url, max_retries=2)) as client:
        with pytest.raises(LLMError, match=r"failed after 3 attempt\(s\), last HTTP 503") as info:
            await client.complete("hi")
    assert server.hits == 3
    assert info.value.url.startswith(server.base_url)


async def test_timeouts_are_retried_then_fail(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, [200], delay_s=1.0)
    start = time.perf_counter()
    async with LLMClient(fast_config(server.base_url, max_retries=1, timeout_s=0.2)) as client:
        with pytest.raises(LLMError, match="ReadTimeout"):
            await client.complete("hi")
    assert server.hits == 2
    assert time.perf_counter() - start < 1.5


async def test_connection_refused_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.perf_counter()
    async with LLMClient(fast_config(url, max_retries=3)) as client:
        with pytest.raises(LLMError, match="ConnectError") as info:
            await client.chat(MESSAGES)
    assert info.value.attempts == 4 and url in str(info.value)
    assert client.usage.retries == 3 and client.usage.failures == 1
    assert time.perf_counter() - start < 2.0


async def test_least_outstanding_prefers_the_faster_server(scripted: list[ScriptedServer]) -> None:
    slow, fast = serve(scripted, [200], delay_s=0.3), serve(scripted, [200])
    async with LLMClient(fast_config(slow.base_url, fast.base_url, max_concurrency=4)) as client:
        results = await asyncio.gather(*(client.complete("hi") for _ in range(40)))
    assert slow.hits + fast.hits == 40
    assert fast.hits >= 3 * slow.hits, (fast.hits, slow.hits)  # round-robin would split 20/20
    assert {r.url for r in results} == {slow.base_url, fast.base_url}


async def test_retry_moves_to_another_server(scripted: list[ScriptedServer]) -> None:
    broken, healthy = serve(scripted, [503]), serve(scripted, [200])
    async with LLMClient(fast_config(broken.base_url, healthy.base_url, max_retries=1)) as client:
        results = [await client.complete("hi") for _ in range(6)]
    assert all(r.url == healthy.base_url for r in results)
    assert broken.hits >= 1  # round-robin tried it, and each such call then moved on


def test_structured_outputs_field() -> None:
    assert structured_outputs(choice=["a"]) == {"choice": ["a"]}
    assert structured_outputs(regex="x+") == {"regex": "x+"}
    assert structured_outputs() is None
    with pytest.raises(ValueError, match="at most one"):
        structured_outputs(json_schema={}, choice=["a"])


# --- the real vLLM CPU server ------------------------------------------------------------------------


def vllm_config(server, **kwargs: object) -> LLMConfig:
    return LLMConfig(base_urls=[server.base_url], model=server.model_name, **kwargs)  # type: ignore[arg-type]


@pytest.mark.vllm
async def test_64_concurrent_json_schema_requests_all_validate(vllm_server, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    async with LLMClient(vllm_config(vllm_server, trace_path=str(trace))) as client:
        results = await asyncio.gather(
            *(
                client.chat(MESSAGES, json_schema=SCHEMA, max_tokens=128, temperature=1.0, seed=i)
                for i in range(64)
            )
        )
    parsed = [json.loads(r.text) for r in results]
    assert all(valid_for_schema(value) for value in parsed), parsed
    assert len({json.dumps(value) for value in parsed}) > 1  # sampled, not one canned answer
    # usage totals are the sum of the per-response usage
    assert client.usage.requests == 64 and client.usage.failures == 0
    assert client.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in results) > 0
    assert client.usage.completion_tokens == sum(r.usage.completion_tokens for r in results) > 0
    # one trace line per call, carrying the request and raw output
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(lines) == 64
    assert {line["texts"][0] for line in lines} == {r.text for r in results}
    assert all(line["request"]["structured_outputs"] == {"json": SCHEMA} for line in lines)
    assert all(line["request"]["messages"] == MESSAGES and line["usage"]["requests"] == 1 for line in lines)
    # each call's wall-clock start and end: the end is the start plus at least the measured latency
    assert all(line["time"] >= line["started"] + line["latency_s"] - 1e-3 for line in lines)


@pytest.mark.vllm
async def test_choice_regex_and_completions(vllm_server) -> None:
    async with LLMClient(vllm_config(vllm_server)) as client:
        choices = await asyncio.gather(
            *(client.chat(MESSAGES, choice=LABELS, temperature=1.0, seed=i, n=2) for i in range(16))
        )
        regexed = await client.complete("Number:", regex=r"[0-9]{3}-[a-c]{2}", temperature=1.0, max_tokens=16)
        free = await client.complete("The", max_tokens=8, stop=["\n"])
    texts = [text for c in choices for text in c.texts]
    assert len(texts) == 32 and set(texts) <= set(LABELS)
    assert re.fullmatch(r"[0-9]{3}-[a-c]{2}", regexed.text), regexed.text
    assert free.usage.completion_tokens <= 8 and isinstance(free, Completion)
    assert client.usage.requests == 18
    assert client.usage.completion_tokens == sum(c.usage.completion_tokens for c in [*choices, regexed, free])


@pytest.mark.vllm
async def test_unknown_model_is_a_400_without_retry(vllm_server) -> None:
    async with LLMClient(vllm_config(vllm_server, backoff_s=5.0)) as client:
        with pytest.raises(LLMError) as info:
            await client.chat(MESSAGES, model="no-such-model", max_tokens=4)
    assert info.value.status in (400, 404) and info.value.attempts == 1
    assert client.usage.retries == 0


async def requests_running(url: str) -> float:
    """vLLM's own gauge of requests being generated, from /metrics (a generous timeout: on two cores the
    engine's busy loop starves the API server, and one /metrics call was measured to take 28 s)."""
    async with httpx.AsyncClient(timeout=60.0) as http:
        text = (await http.get(f"{url}/metrics")).text
    gauge = re.search(r"^vllm:num_requests_running\{[^}]*\} ([0-9.]+)$", text, re.MULTILINE)
    return float(gauge.group(1)) if gauge else 0.0


@pytest.mark.vllm
async def test_server_killed_mid_run_raises_naming_url(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A second, private engine is killed while requests are in flight: every call fails fast and clearly."""
    from verifier.serve.engine import EngineConfig, VLLMEngine

    log = str(tmp_path / "vllm.log")
    engine = VLLMEngine(EngineConfig(model=str(tiny_model_dir), max_model_len=4096, log_path=log))
    with engine:
        # the timeout outlasts any generation here: only the kill may end a call with an error
        config = LLMConfig(
            base_urls=[engine.base_url], model=engine.model_name, max_retries=3, backoff_s=0.1, timeout_s=900
        )
        async with LLMClient(config) as client:
            await client.chat(MESSAGES, max_tokens=4)  # it serves before the crash
            # 16 requests x 4 samples x 4000 tokens: minutes of generation on two cores. On a CPU starved by
            # other work the /metrics poll can outlast the first of them, so a call may have completed before
            # the kill: it must have succeeded; every call still in flight at the kill must fail.
            long = {"max_tokens": 4000, "n": 4, "temperature": 1.0, "extra_body": {"ignore_eos": True}}
            calls = [asyncio.create_task(client.chat(MESSAGES, **long)) for _ in range(16)]
            deadline = time.monotonic() + 120
            while await requests_running(engine.url) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await requests_running(engine.url) >= 1
            in_flight = [call for call in calls if not call.done()]
            completed = [
                call.result() for call in calls if call.done()
            ]  # raises if one failed before the kill
            assert in_flight, "every call completed before the kill"
            start = time.perf_counter()
            engine.kill()
            outcomes = await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), timeout=60)
            elapsed = time.perf_counter() - start
    assert all(isinstance(outcome, LLMError) for outcome in outcomes), outcomes
    error = outcomes[0]
    assert engine.base_url in str(error) and error.attempts == 4 and error.status is None, str(error)
    failed = len(in_flight)
    assert client.usage.failures == failed and client.usage.retries == failed * 3
    assert client.usage.requests == 1 + len(completed)
    assert elapsed < 20, elapsed  # retries back off ~0.1+0.2+0.4 s (x0.5-1.5 jitter); nothing hangs


def test_llm_config_for_endpoint_is_the_one_constructor_of_the_stages() -> None:
    from rubric_pipeline.core.errors import ConfigError

    one = LLMConfig.for_endpoint("http://127.0.0.1:8000/v1", "m", timeout_s=5.0, trace_path=None)
    assert one == LLMConfig(base_urls=["http://127.0.0.1:8000/v1"], model="m", timeout_s=5.0)
    many = LLMConfig.for_endpoint(("http://a/v1", "http://b/v1"), "m", max_retries=0)
    assert many.base_urls == ["http://a/v1", "http://b/v1"] and many.max_retries == 0
    with pytest.raises(ConfigError, match=r"^--judge llm needs --llm-url and --model$"):
        LLMConfig.for_endpoint([], "m", what="--judge llm")
    with pytest.raises(ConfigError, match="needs --gen-url"):
        LLMConfig.for_endpoint(["http://a/v1"], "", need="--gen-url and --model")
