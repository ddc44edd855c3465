"""Nugget extraction: cleaning, offline sentence selection, and the LLM path on vLLM."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.core.records import Passage
from rubric_pipeline.extract import (
    clean_nugget,
    extract_offline,
    extract_with_llm,
    idf_weights,
    nugget_schema,
    parse_nuggets,
    question_anchors,
)

PASSAGE = Passage(
    passage_id="d1#0",
    doc_id="d1",
    title="Velmora",
    text=(
        "Velmora is a coastal city in the province of Tarsk. It was founded in 1342 by salt traders. "
        "Ferries leave for the islands every hour. The city has a population of about 84,000 people."
    ),
)


def test_clean_nugget_bounds_and_none() -> None:
    assert clean_nugget("  - velmora was founded in 1342 by salt traders ") == (
        "Velmora was founded in 1342 by salt traders."
    )
    assert clean_nugget("None") is None
    assert clean_nugget("") is None
    assert clean_nugget("too short") is None
    assert clean_nugget(" ".join(["word"] * 40)) is None


def test_clean_nugget_drops_markdown_layout_but_keeps_numbers() -> None:
    assert clean_nugget("2. **Foreign investment**: US firms have invested in Chinese factories.") == (
        "Foreign investment: US firms have invested in Chinese factories."
    )
    assert clean_nugget("### The __Marshall Plan__ aided European recovery after the war") == (
        "The Marshall Plan aided European recovery after the war."
    )
    assert clean_nugget("2.5 million people live in the old port city.") == (
        "2.5 million people live in the old port city."
    )
    assert clean_nugget("In 1990. the port city grew quickly for years") == (
        "In 1990. the port city grew quickly for years."
    )


def test_offline_extraction_selects_question_sentences_and_names_the_entity() -> None:
    nuggets = extract_offline("When was Velmora founded?", ["Velmora salt traders"], PASSAGE, max_nuggets=2)
    assert len(nuggets) == 2
    assert "Velmora was founded in 1342 by salt traders." in nuggets  # leading "It" replaced by the title
    assert not any("Ferries" in n for n in nuggets)  # shares no question term
    assert all(n.split()[0].lower() not in {"it", "they"} for n in nuggets)


def test_offline_extraction_returns_nothing_for_an_unrelated_question() -> None:
    assert extract_offline("Which kite festival does Ostrel host?", [], PASSAGE) == []


def test_parse_nuggets_rejects_malformed_answers() -> None:
    assert parse_nuggets('{"nuggets": []}') == []
    with pytest.raises(ValueError):
        parse_nuggets('{"facts": ["x"]}')
    with pytest.raises(ValueError):
        parse_nuggets('{"nuggets": ["cut')
    assert nugget_schema(3)["properties"]["nuggets"]["maxItems"] == 3


@pytest.mark.vllm
async def test_llm_extraction_on_vllm_parses_and_respects_the_cap(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    events: Counter = Counter()
    async with LLMClient(config) as client:
        nuggets = await extract_with_llm(
            client,
            "When was Velmora founded?",
            ["Velmora founding"],
            PASSAGE,
            max_nuggets=2,
            min_words=1,
            max_words=60,
            max_chars=60,
            max_tokens=160,
            events=events,
        )
    assert nuggets is not None, "structured outputs must keep the tiny model's answer parseable"
    assert len(nuggets) <= 2
    assert events["extract.llm_failures"] == 0
    assert all(n.endswith((".", "!", "?")) for n in nuggets)
    assert json.dumps(nuggets)  # plain strings


async def test_llm_extraction_failure_is_reported_not_silent() -> None:
    # nothing listens on port 9: the call fails for good and the caller is told (None), with the count
    config = LLMConfig(base_urls=["http://127.0.0.1:9/v1"], model="m", max_retries=0, timeout_s=2)
    events: Counter = Counter()
    async with LLMClient(config) as client:
        assert await extract_with_llm(client, "q", [], PASSAGE, events=events) is None
    assert events["extract.llm_failures"] == 1


def test_idf_weights_prefer_informative_sentences_and_anchor_passages() -> None:
    filler = "is a city that appears in several regional records."
    docs = [f"Town{i} {filler} Town{i} exports item{i}." for i in range(20)]
    passage = Passage(
        "z#0",
        "z",
        f"Zanemthorp {filler} Zanemthorp sits on the Gormlitarn River in the Norordal region.",
        "Zanemthorp",
    )
    weights = idf_weights([*docs, passage.text])
    assert weights["zanemthorp"] > weights["city"] > 0
    question = "What are the key facts about the city of Zanemthorp?"
    best = extract_offline(question, [], passage, max_nuggets=1, term_weights=weights)
    assert best == ["Zanemthorp sits on the Gormlitarn River in the Norordal region."]
    assert question_anchors(question, [passage.text, docs[0]], weights) == {"zanemthorp"}
    other = Passage("t#0", "t", docs[0])  # shares only "city": no anchor, no nuggets
    assert extract_offline(question, [], other, term_weights=weights, anchors={"zanemthorp"}) == []


def test_clause_splitting_makes_list_items_atomic_statements() -> None:
    from rubric_pipeline.extract import split_clauses

    sentence = (
        "Additionally, key challenges include the export of toxic waste to poor nations, which harms "
        "workers, falling prices for recycled metals, and products that are hard to repair, reuse, or "
        "recycle."
    )
    assert split_clauses(sentence) == [
        "the export of toxic waste to poor nations, which harms workers",  # the relative clause stays
        "falling prices for recycled metals",
        "products that are hard to repair, reuse, or recycle",  # a nested list stays whole
    ]
    assert split_clauses("Symptoms include fever, cough, and fatigue.") == [
        "Symptoms include fever, cough, and fatigue"
    ]
    assert split_clauses("Tolls rose; ferries stopped, while the bridge stayed open.") == [
        "Tolls rose", "ferries stopped", "the bridge stayed open"
    ]  # fmt: skip


def test_offline_answer_settings_skip_meta_statements_and_fragments() -> None:
    passage = Passage(
        "a#1", "a",
        "cut at the chunk start and of no use here. The provided documents do not mention the founding date. "
        "The harbor of Velmora was built in 1901 by the guild, and ferries were added in 1950.",
    )  # fmt: skip
    nuggets = extract_offline(
        "velmora history", [], passage, max_nuggets=5, clauses=True, sentence_anchor=False
    )
    assert nuggets == [
        "The harbor of Velmora was built in 1901 by the guild, and ferries were added in 1950."
    ]
    # a sentence without the anchor term qualifies when the passage holds it
    other = Passage(
        "b#0", "b", "Velmora lies on the coast. Ferries leave the harbor every hour for the islands."
    )
    assert len(extract_offline("velmora ferries", [], other, max_nuggets=5, anchors={"velmora"})) == 1
    assert (
        len(
            extract_offline(
                "velmora ferries", [], other, max_nuggets=5, anchors={"velmora"}, sentence_anchor=False
            )
        )
        == 2
    )
