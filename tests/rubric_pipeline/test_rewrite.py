"""Query rewriting: RM3 feedback terms, breadth-first PRF expansion, dedup, and the LLM path on vLLM."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.rewrite import (
    MAX_OPERATIONS_PER_REWRITE,
    OPERATIONS,
    QueryDeduper,
    expand_offline,
    expand_with_llm,
    parse_rewrites,
    prf_terms,
    rewrite_schema,
)

FEEDBACK = [
    ("Velmora harbor glass harbor ferries islands", 9.0),
    ("Velmora salt traders harbor", 3.0),
    ("unrelated kite festival", 0.0),
]


def test_prf_terms_weight_by_score_and_skip_query_terms() -> None:
    terms = prf_terms("velmora history", FEEDBACK, n_terms=3)
    names = [term for term, _ in terms]
    assert names[0] == "harbor"  # frequent in the best-scored passage
    assert "velmora" not in names  # query terms are excluded
    assert "kite" not in names  # zero-score passage contributes nothing
    assert [w for _, w in terms] == sorted((w for _, w in terms), reverse=True)


async def test_expand_offline_is_bounded_deduplicated_and_breadth_first() -> None:
    calls: list[str] = []

    async def feedback(query: str) -> list[tuple[str, float]]:
        calls.append(query)
        return FEEDBACK

    nodes = await expand_offline("velmora history", feedback, depth=2, max_nodes=4, per_call=2, n_terms=2)
    assert len(nodes) == 4
    assert nodes[0].query == "velmora history" and nodes[0].depth == 0
    assert [n.depth for n in nodes] == sorted(n.depth for n in nodes)  # breadth first
    assert all(n.query.startswith("velmora history") for n in nodes)
    assert len({n.query for n in nodes}) == 4
    assert calls[0] == "velmora history"
    assert await expand_offline("velmora history", feedback, depth=0) == nodes[:1]


def test_deduper_drops_near_duplicates() -> None:
    deduper = QueryDeduper(0.8, ["when was velmora founded"])
    assert not deduper.add("When was Velmora founded?")
    assert not deduper.add("   ")
    assert deduper.add("who founded the harbor city")


def test_parse_rewrites_validates_operations() -> None:
    text = json.dumps([{"operations": ["synonym", "synonym"], "query": " who built  it "}])
    assert parse_rewrites(text) == [(("synonym",), "who built it")]
    with pytest.raises(ValueError, match="operations"):
        parse_rewrites(json.dumps([{"operations": ["teleport"], "query": "x y"}]))
    with pytest.raises(ValueError, match="not JSON"):
        parse_rewrites('[{"operations": ["synonym"], "query": "unterminated')
    schema = rewrite_schema(3)
    assert schema["maxItems"] == 3
    assert schema["items"]["properties"]["operations"]["maxItems"] == MAX_OPERATIONS_PER_REWRITE
    assert schema["items"]["properties"]["operations"]["items"]["enum"] == list(OPERATIONS)


@pytest.mark.vllm
async def test_llm_rewriting_on_vllm_stays_within_the_budget(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    events: Counter = Counter()
    async with LLMClient(config) as client:
        nodes = await expand_with_llm(
            client,
            "When was Velmora founded?",
            depth=2,
            max_nodes=5,
            per_call=2,
            max_chars=40,
            max_tokens=128,
            events=events,
        )
    assert nodes[0].query == "When was Velmora founded?"
    assert 1 <= len(nodes) <= 5
    assert events["rewrite.llm_calls"] >= 1
    # structured outputs keep a random model parseable: every call parsed
    assert events["rewrite.llm_failures"] == 0
    for node in nodes[1:]:
        assert 1 <= len(node.operations) <= MAX_OPERATIONS_PER_REWRITE
        assert set(node.operations) <= set(OPERATIONS)
        assert node.parent is not None and nodes[node.parent].depth == node.depth - 1
