"""Merge and importance: clustering near-duplicates, provenance union, the offline rule, LLM paths."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.extract import Candidate
from rubric_pipeline.merge import (
    Cluster,
    cluster,
    embed,
    group_candidates,
    llm_importance,
    llm_merge,
    offline_importance,
    to_rubrics,
)

CANDIDATES = [
    Candidate("Velmora was founded in 1342 by salt traders.", "d1#0", "d1", "velmora founded", 0),
    Candidate("Salt traders founded Velmora in the year 1342.", "d2#0", "d2", "velmora history", 3),
    Candidate("Quorin Labs makes warehouse robots and drones.", "d3#0", "d3", "velmora founded", 5),
    Candidate("Velmora was founded in 1342 by salt traders.", "d1#0", "d1", "velmora history", 0),
]


def test_cluster_groups_paraphrases_apart_from_other_facts() -> None:
    vectors = embed([c.text for c in CANDIDATES])
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert cluster(vectors, 0.8) == [[0, 1, 3], [2]]
    assert cluster(vectors, 0.9999) == [[0, 3], [1], [2]]  # only the exact duplicate
    assert cluster(vectors[:1], 0.8) == [[0]] and cluster(vectors[:0], 0.8) == []


def test_merged_rubric_keeps_every_source_and_offline_importance() -> None:
    clusters = group_candidates(CANDIDATES, embed([c.text for c in CANDIDATES]), 0.8)
    founded, robots = clusters
    assert {(s.passage_id, s.query) for s in founded.sources} == {
        ("d1#0", "velmora founded"),
        ("d1#0", "velmora history"),
        ("d2#0", "velmora history"),
    }
    assert founded.n_passages == 2 and founded.best_rank == 0
    assert offline_importance(founded) == "vital"  # two passages
    assert offline_importance(robots) == "okay"  # one passage ranked 5
    assert offline_importance(robots, vital_top_rank=6) == "vital"
    rubrics = to_rubrics("q1", [robots, founded], ["okay", "vital"], max_rubrics=10)
    assert [r.importance for r in rubrics] == ["vital", "okay"]  # vital first
    assert [r.rubric_id for r in rubrics] == ["q1-r0", "q1-r1"]
    assert rubrics[0].weight == 1.0 and rubrics[1].weight == 0.5
    assert len(to_rubrics("q1", [robots, founded], ["okay", "vital"], max_rubrics=1)) == 1


@pytest.mark.vllm
async def test_llm_merge_and_importance_on_vllm(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    item = Cluster(CANDIDATES[0].text, CANDIDATES[:2])
    events: Counter = Counter()
    async with LLMClient(config) as client:
        merged = await llm_merge(client, "When was Velmora founded?", item, max_chars=60, events=events)
        importance = await llm_importance(client, "When was Velmora founded?", merged, events=events)
    assert events["merge.llm_calls"] == 1
    # either the model's merged text passed cleaning, or the failure was counted and the center kept
    assert (merged == item.text) == (events["merge.llm_failures"] == 1)
    assert importance in {"vital", "okay"}  # the choice constraint holds even for a random model
    assert events["importance.llm_failures"] == 0
