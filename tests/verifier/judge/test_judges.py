"""Judges: LLMJudge against the real vLLM server (tiny model), failure paths, and the no-LLM baselines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rubric_pipeline.core.llm import Completion, LLMClient, LLMConfig, Usage
from rubric_pipeline.core.records import LABELS, LabelledExample, Rubric
from verifier.judge.judges import Judge, LLMJudge, Reason, judge_all, majority_vote

S, P, N = "support", "partial_support", "not_support"
QUESTION = "When did the Varenholt bridge open?"
RESPONSE = "The Varenholt bridge opened in 1932. Harbor tolls pay for its upkeep."


def _rubrics(n: int) -> list[Rubric]:
    return [Rubric(f"r{i}", f"The bridge has property number {i}") for i in range(n)]


class CountingClient(LLMClient):
    """The real client, also recording how many chat requests were in flight at once."""

    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        self.in_flight = self.peak = 0
        self.calls: list[dict[str, Any]] = []

    async def chat(self, messages: list[dict[str, Any]], **kwargs: Any):
        self.calls.append(kwargs)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().chat(messages, **kwargs)
        finally:
            self.in_flight -= 1


def test_majority_vote_ties_go_to_the_lower_support_label() -> None:
    assert majority_vote([[S, P, N], [S, S, N], [N, S, N]]) == [S, S, N]
    assert majority_vote([[S, P], [N, S]]) == [N, P]  # 1-1 ties: withhold credit
    assert majority_vote([[S], [P], [N]]) == [N]
    with pytest.raises(ValueError):
        majority_vote([[S], [S, N]])


def test_llm_judge_refuses_greedy_self_consistency() -> None:
    client = LLMClient(LLMConfig(base_urls=["http://127.0.0.1:1/v1"], model="m"))
    with pytest.raises(ValueError, match="temperature"):
        LLMJudge(client, samples=3, temperature=0.0)


@pytest.mark.vllm
async def test_llm_judge_windows_parse_and_run_concurrently(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=60)
    async with CountingClient(config) as client:
        judge = LLMJudge(client, window=10)
        assert isinstance(judge, Judge)
        judgement = await judge.judge(QUESTION, RESPONSE, _rubrics(25))
    assert judgement.error is None, judgement.error
    assert judgement.labels is not None and len(judgement.labels) == 25
    assert set(judgement.labels) <= set(LABELS)
    assert len(judgement.raw) == 3  # windows of 10, 10, 5
    assert [call["json_schema"]["minItems"] for call in client.calls] == [10, 10, 5]
    assert client.peak == 3  # every window of the response was in flight together
    assert client.usage.requests == 3


@pytest.mark.vllm
async def test_llm_judge_self_consistency_votes_over_samples(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=60)
    async with LLMClient(config) as client:
        judge = LLMJudge(client, window=4, samples=3, temperature=1.0)
        judgement = await judge.judge(QUESTION, RESPONSE, _rubrics(6))
    assert judgement.labels is not None and len(judgement.labels) == 6
    assert len(judgement.raw) == 6  # 2 windows x 3 samples, each constrained to parse
    window_one = [json.loads(text) for text in judgement.raw[:3]]
    assert judgement.labels[:4] == majority_vote(window_one)


async def test_refused_connection_is_unjudgeable_with_a_reason() -> None:
    from verifier.serve.engine import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with LLMClient(LLMConfig(base_urls=[url], model="m", max_retries=1, backoff_s=0.01)) as client:
        judge = LLMJudge(client)
        judgement = await judge.judge(QUESTION, RESPONSE, _rubrics(12))
        assert judgement.labels is None
        assert "request failed" in (judgement.error or "")
        assert "window 1/2" in judgement.error and "window 2/2" in judgement.error
        requests_before = client.usage.requests
        # degenerate responses and empty rubric lists never reach the server
        degenerate = await judge.judge(QUESTION, "Thought process:", _rubrics(3))
        assert degenerate.labels == [N, N, N] and degenerate.note == "degenerate"
        empty = await judge.judge(QUESTION, RESPONSE, [])
        assert empty.labels is None and "no rubrics" in (empty.error or "")
        assert client.usage.requests == requests_before


class NoLogprobsClient(LLMClient):
    """Answers every window with valid labels but, like a server without logprobs, no logprobs."""

    async def chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        text = json.dumps([S] * 3)  # the tests below judge 3 rubrics: one window
        return Completion([text], Usage(), 0.0, "fake", ["stop"], [{"message": {"content": text}}])


async def test_labels_without_readable_probabilities_are_unparsable() -> None:
    judge = LLMJudge(NoLogprobsClient(LLMConfig(base_urls=["http://fake/v1"], model="m")))
    plain = await judge.judge(QUESTION, RESPONSE, _rubrics(3))
    assert plain.labels == [S, S, S] and plain.probs is None and plain.reason is None
    asked = await judge.judge(QUESTION, RESPONSE, _rubrics(3), with_probs=True)
    assert asked.labels is None and asked.reason is Reason.UNPARSABLE
    assert "logprobs" in (asked.error or "")


# ---------------------------------------------------------------- baselines

RUBRICS = [
    Rubric("a", "The Varenholt bridge opened in 1932"),
    Rubric("b", "Harbor tolls pay for bridge upkeep"),
    Rubric("c", "The bridge was designed by Ilse Marten"),
]
TRAIN = [
    LabelledExample("q", QUESTION, RESPONSE, "x1", RUBRICS, [S, S, N], "human"),
    LabelledExample(
        "q", QUESTION, "The bridge was designed by Ilse Marten.", "x2", RUBRICS, [N, N, S], "human"
    ),
    LabelledExample(
        "q", QUESTION, "It opened in 1932, designed by Marten.", "x3", RUBRICS, [P, N, P], "human"
    ),
    LabelledExample("q", QUESTION, "Ferries cross the river every hour.", "x4", RUBRICS, [N, N, N], "human"),
]


async def _predict(judge, examples) -> list[list[str]]:
    return [j.labels for j in await judge_all(judge, examples, concurrency=2, progress=False)]


async def test_lexical_judge_fits_thresholds_on_dev() -> None:
    from rubric_pipeline.core.text import content_tokens
    from verifier.judge.baselines import LexicalJudge

    # the lexical judge's tokens: content words, lightly stemmed
    assert content_tokens("The bridges opened in 1932!", stem=True) == ["bridge", "open", "1932"]
    judge = LexicalJudge().fit(TRAIN)
    assert judge.partial <= judge.support
    assert judge.fit_macro_f1 == pytest.approx(1.0)
    assert await _predict(judge, TRAIN) == [example.labels for example in TRAIN]


async def test_embedding_judge_scores_paraphrases_above_unrelated(minilm_path: str) -> None:
    from verifier.judge.baselines import EmbeddingJudge

    judge = EmbeddingJudge(model_path=minilm_path)
    (row,) = judge.scores([TRAIN[0]])
    assert row[0] > 0.6 and row[0] > row[2]  # stated fact vs a fact the response never mentions
    judge.fit(TRAIN)
    assert judge.fit_macro_f1 > 0.5
    predictions = await _predict(judge, TRAIN)
    assert predictions[0][0] == S and predictions[3] == [N, N, N]


async def test_majority_judge_and_judge_all_order() -> None:
    from verifier.judge.baselines import MajorityJudge

    judge = MajorityJudge().fit(TRAIN)
    assert judge.label == N  # 7 of 12 labels
    judgements = await judge_all(judge, TRAIN, concurrency=3, progress=False)
    assert [len(j.labels) for j in judgements] == [3, 3, 3, 3]
    with pytest.raises(RuntimeError):
        await MajorityJudge().judge(QUESTION, RESPONSE, RUBRICS)


async def test_degenerate_guard_can_be_turned_off_for_evaluation():
    """With the guard off the judge must call the model; a refused connection then shows as unjudgeable."""
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from rubric_pipeline.core.records import Rubric
    from verifier.judge.judges import LLMJudge
    from verifier.serve.engine import free_port

    config = LLMConfig(base_urls=[f"http://127.0.0.1:{free_port()}/v1"], model="m", max_retries=0)
    rubrics = [Rubric("r0", "The river is long.")]
    async with LLMClient(config) as client:
        guarded = await LLMJudge(client).judge("q?", ":", rubrics)
        unguarded = await LLMJudge(client, degenerate_guard=False).judge("q?", ":", rubrics)
    assert guarded.labels == ["not_support"] and guarded.note == "degenerate"
    assert unguarded.labels is None and "request failed" in unguarded.error
