"""RewardService without HTTP, against the real vLLM CPU server: how an item's windows are scheduled."""

from __future__ import annotations

import json
import re

import pytest

from rubric_pipeline.core.records import LABELS, Rubric
from verifier.serve.engine import CPU_BLOCK_SIZE, EngineConfig, VLLMEngine
from verifier.serve.service import Item, RewardService

QUESTION = "Which river flows through the city of Varn?"
RESPONSE = "The Sella river flows through Varn and was first mapped in 1821 by the surveyor Ima Tork."


def rubrics(count: int, tag: str) -> list[Rubric]:
    return [Rubric(f"r{i}", f"The response says fact {i} about Varn ({tag}).") for i in range(count)]


async def judge_with_trace(vllm_server, tmp_path, first_window: int | None, items: list[Item]):
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge

    trace = tmp_path / f"trace-{first_window}.jsonl"
    config = LLMConfig([vllm_server.base_url], vllm_server.model_name, trace_path=str(trace))
    async with LLMClient(config) as client:
        service = RewardService(LLMJudge(client, window=10), first_window=first_window)
        results = await service.judge_items(items)
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    return results, calls


def spans(calls: list[dict]) -> dict[tuple[str, int], tuple[float, float]]:
    """(item tag, index of the window's first rubric) -> (start, end) of that engine call."""
    out = {}
    for call in calls:
        content = call["request"]["messages"][0]["content"]
        tag = re.search(r"\((i\d)\)", content).group(1)
        first = int(re.search(r"Rubrics:\n1\. The response says fact (\d+) ", content).group(1))
        out[tag, first] = (call["started"], call["time"])
    return out


@pytest.mark.vllm
async def test_first_window_is_judged_before_the_others(vllm_server, tmp_path):
    items = [Item(QUESTION, f"{RESPONSE} ({tag})", rubrics(25, tag)) for tag in ("i0", "i1")]
    results, calls = await judge_with_trace(vllm_server, tmp_path, 10, items)
    assert [len(r.labels) for r in results] == [25, 25] and all(r.reward is not None for r in results)
    assert all(set(r.labels) <= set(LABELS) for r in results)
    timing = spans(calls)
    assert sorted(timing) == [(tag, first) for tag in ("i0", "i1") for first in (0, 10, 20)]
    for tag in ("i0", "i1"):
        head_end = timing[tag, 0][1]
        assert timing[tag, 10][0] >= head_end and timing[tag, 20][0] >= head_end
        assert timing[tag, 10][0] < timing[tag, 20][1]  # the later windows run together
    assert timing["i0", 0][0] < timing["i1", 0][1]  # items are not serialised against each other


@pytest.mark.vllm
async def test_without_first_window_every_window_starts_at_once(vllm_server, tmp_path):
    items = [Item(QUESTION, f"{RESPONSE} (i2)", rubrics(25, "i2"))]
    results, calls = await judge_with_trace(vllm_server, tmp_path, None, items)
    assert len(results[0].labels) == 25
    timing = spans(calls)
    assert len(timing) == 3
    assert max(start for start, _ in timing.values()) < min(end for _, end in timing.values())


@pytest.mark.vllm
async def test_a_failed_first_window_spares_the_others(vllm_server, tmp_path):
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge

    trace = tmp_path / "trace.jsonl"
    config = LLMConfig([vllm_server.base_url], "no-such-model", max_retries=0, trace_path=str(trace))
    async with LLMClient(config) as client:
        service = RewardService(LLMJudge(client, window=10), first_window=10)
        (result,) = await service.judge_items([Item(QUESTION, RESPONSE, rubrics(25, "i3"))])
    assert result.reward is None and result.labels is None and result.reason == "engine_error"
    assert result.error.startswith("rubrics 1-10: ")
    assert len(trace.read_text().splitlines()) == 1  # windows 2 and 3 were never sent


def test_cpu_engines_get_small_kv_blocks():
    command = VLLMEngine(EngineConfig(model="m", device="cpu")).command()
    assert command[command.index("--block-size") + 1] == str(CPU_BLOCK_SIZE)
    chosen = VLLMEngine(EngineConfig(model="m", device="cpu", block_size=128)).command()
    assert chosen[chosen.index("--block-size") + 1] == "128"


class ProbsJudge:
    """A judge that gives every rubric the same labels and distribution (``probs=None``: none at all)."""

    name, supports_probs, window = "fixed", True, 10

    def __init__(self, probs: dict[str, float] | None):
        self.probs = probs

    async def judge(self, question, response, rubrics, with_probs=False):
        from verifier.judge.judges import Judgement

        probs = [dict(self.probs) for _ in rubrics] if with_probs and self.probs else None
        return Judgement(["support"] * len(rubrics), probs=probs)


async def test_soft_reward_counts_pitfalls_and_missing_probs_are_unparsable():
    from verifier.serve.service import ProbOptions

    items = [Item(QUESTION, RESPONSE, [Rubric("a", "A", weight=1.0), Rubric("x", "X", weight=-0.5)])]
    probs = {"support": 0.5, "partial_support": 0.2, "not_support": 0.3}  # expected score 0.6
    soft = ProbOptions(return_probs=True, soft_reward=True)
    (result,) = await RewardService(ProbsJudge(probs)).judge_items(items, options=soft)
    assert result.reward == pytest.approx(0.6 - 0.5 * 0.6) and result.probs == [probs, probs]
    (hard,) = await RewardService(ProbsJudge(probs)).judge_items(items)
    assert hard.reward == pytest.approx(0.5) and hard.probs is None  # the pitfall judged support: -0.5
    (missing,) = await RewardService(ProbsJudge(None)).judge_items(items, options=soft)
    assert missing.reward is None and missing.labels is None and missing.reason == "unparsable"


@pytest.mark.vllm
async def test_items_take_turns_in_arrival_order_and_the_deadline_runs_from_the_turn(vllm_server, tmp_path):
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge

    trace = tmp_path / "turns.jsonl"
    config = LLMConfig([vllm_server.base_url], vllm_server.model_name, trace_path=str(trace))
    items = [Item(QUESTION, f"{RESPONSE} (i{k})", rubrics(3, f"i{k}")) for k in range(6)]
    async with LLMClient(config) as client:
        service = RewardService(LLMJudge(client, window=10), items_at_once=2)
        results = await service.judge_items(items)
    assert all(r.reward is not None for r in results)
    timing = spans([json.loads(line) for line in trace.read_text().splitlines()])
    starts = sorted((start, tag) for (tag, _), (start, _) in timing.items())
    assert [tag for _, tag in starts] == [f"i{k}" for k in range(6)]  # first come, first judged
    for start, _ in starts:  # never more than two items at the engine
        assert sum(begin <= start < end for begin, end in timing.values()) <= 2


@pytest.mark.vllm
async def test_samples_past_the_answer_deadline_come_back_overloaded_in_time(vllm_server):
    """/get_reward's deadline: a client with a fixed timeout (OpenRLHF: 180 s) gets an answer in time."""
    import time

    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge

    items = [Item(QUESTION, f"{RESPONSE} (d{k})", rubrics(10, f"d{k}")) for k in range(16)]
    async with LLMClient(LLMConfig([vllm_server.base_url], vllm_server.model_name)) as client:
        service = RewardService(LLMJudge(client, window=10), items_at_once=1)
        started = time.perf_counter()
        results = await service.judge_items(items, answer_within_s=1.0)
        waited = time.perf_counter() - started
    assert waited < 4.0  # the deadline, plus the cancellation of the item being judged
    assert {r.reason for r in results} <= {None, "overloaded"} and results[-1].reason == "overloaded"
    assert all((r.reward is None) == (r.reason == "overloaded") for r in results)
