"""The shared stage call: counts calls, turns failed calls and unparsable answers into a counted None."""

from __future__ import annotations

from collections import Counter

import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.llm_call import ask_parsed
from rubric_pipeline.merge import IMPORTANCE_CHOICES, parse_importance
from rubric_pipeline.rewrite import parse_rewrites

VALUES = {"question": "When was Velmora founded?", "nugget": "Velmora was founded in 1342."}


@pytest.mark.vllm
async def test_parsed_answer_and_unparsable_answer_on_vllm(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    events: Counter = Counter()
    choice = list(IMPORTANCE_CHOICES)
    async with LLMClient(config) as client:
        for api in ("chat", "completions"):
            answer = await ask_parsed(
                client,
                "importance",
                VALUES,
                parse_importance,
                about="t",
                api=api,
                events=events,
                choice=choice,
            )
            assert answer in IMPORTANCE_CHOICES
        # the same constrained answer ("vital"/"okay") is not a JSON list: counted as a failure, None back
        wrong = await ask_parsed(
            client, "importance", VALUES, parse_rewrites, about="t", events=events, choice=choice
        )
    assert wrong is None
    assert events == Counter({"importance.llm_calls": 3, "importance.llm_failures": 1})
    assert client.usage.requests == 3


async def test_failed_call_is_counted_and_an_unknown_api_is_raised() -> None:
    # nothing listens on port 9: the call fails for good; the caller gets None and the count
    config = LLMConfig(base_urls=["http://127.0.0.1:9/v1"], model="m", max_retries=0, timeout_s=2)
    events: Counter = Counter()
    async with LLMClient(config) as client:
        assert await ask_parsed(client, "importance", VALUES, str, about="t", events=events) is None
        with pytest.raises(ValueError, match="unknown llm api 'responses'"):
            await ask_parsed(client, "importance", VALUES, str, about="t", api="responses", events=events)
    assert events == Counter({"importance.llm_calls": 1, "importance.llm_failures": 1})
