"""Merge and importance: near-duplicate nuggets become one rubric that keeps every source.

Nuggets are embedded with MiniLM and clustered by average-linkage agglomerative clustering on cosine
distance (members of a cluster have mean cosine similarity >= ``threshold``). A cluster becomes one nugget
(an LLM rewrite of the members when configured, else the most central member); importance is vital/okay
(an LLM constrained to the two words, or the offline rule: vital when >= ``vital_min_passages`` distinct
passages support it or it comes from a passage ranked within ``vital_top_rank``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rubric_pipeline.core.records import DEFAULT_WEIGHTS, Importance, Rubric, Source
from rubric_pipeline.extract import Candidate, clean_nugget, nugget_pattern
from rubric_pipeline.llm_call import ask_parsed
from rubric_pipeline.retrieval.dense import encode, load_encoder

logger = logging.getLogger(__name__)


def embed(texts: Sequence[str], model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-normalized float32 embeddings (all-MiniLM-L6-v2 by default, the retriever's shared encoder)."""
    if not texts:
        encoder = load_encoder(model)
        dimension = getattr(encoder, "get_embedding_dimension", encoder.get_sentence_embedding_dimension)()
        return np.zeros((0, dimension), dtype=np.float32)
    return np.asarray(encode(list(texts), model=model, batch_size=batch_size), dtype=np.float32)


def cluster(embeddings: np.ndarray, threshold: float = 0.8) -> list[list[int]]:
    """Average-linkage clusters with mean cosine similarity >= ``threshold``, ordered by first member."""
    n = len(embeddings)
    if n == 0:
        return []
    if n == 1:
        return [[0]]
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=1.0 - threshold
    ).fit_predict(embeddings)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return sorted(groups.values(), key=lambda members: members[0])


def central_member(embeddings: np.ndarray, members: Sequence[int]) -> int:
    """The member with the highest mean cosine similarity to the others (first one on ties)."""
    if len(members) == 1:
        return members[0]
    block = embeddings[list(members)]
    scores = (block @ block.T).mean(axis=1)
    return members[int(np.argmax(scores))]


@dataclass
class Cluster:
    """One merged nugget before importance: its text, members and union of provenance."""

    text: str
    members: list[Candidate]

    @property
    def sources(self) -> list[Source]:
        first = {(m.passage_id, m.query): m for m in reversed(self.members)}
        return [
            Source(m.passage_id, m.doc_id, m.query, m.url, m.title)
            for _, m in sorted(first.items(), key=lambda item: item[0])
        ]

    @property
    def n_passages(self) -> int:
        return len({member.passage_id for member in self.members})

    @property
    def best_rank(self) -> int:
        return min(member.rank for member in self.members)


def group_candidates(
    candidates: Sequence[Candidate], embeddings: np.ndarray, threshold: float
) -> list[Cluster]:
    """Cluster one question's candidates; each cluster starts with its most central member's text."""
    clusters = []
    for members in cluster(embeddings, threshold):
        center = central_member(embeddings, members)
        clusters.append(Cluster(candidates[center].text, [candidates[i] for i in members]))
    return clusters


def offline_importance(item: Cluster, vital_min_passages: int = 2, vital_top_rank: int = 1) -> str:
    if item.n_passages >= vital_min_passages or item.best_rank < vital_top_rank:
        return Importance.VITAL.value
    return Importance.OKAY.value


def merge_schema(max_chars: int = 200) -> dict:
    return {
        "type": "object",
        "properties": {"nugget": {"type": "string", "pattern": nugget_pattern(max_chars)}},
        "required": ["nugget"],
        "additionalProperties": False,
    }


async def llm_merge(
    client,
    question: str,
    item: Cluster,
    *,
    min_words: int = 5,
    max_words: int = 35,
    max_chars: int = 200,
    max_tokens: int = 128,
    api: str = "chat",
    seed: int | None = 0,
    events: Counter | None = None,
) -> str:
    """LLM rewrite of a multi-member cluster into one nugget; keeps the central member (counted) when the
    call fails or the answer does not pass :func:`clean_nugget`."""

    def parse(answer: str) -> str:
        try:
            data = json.loads(answer)
        except json.JSONDecodeError as exc:
            raise ValueError(f"merge output is not JSON ({exc.msg}): {answer[:80]!r}") from None
        nugget = data.get("nugget") if isinstance(data, dict) else None
        merged = clean_nugget(nugget, min_words, max_words) if isinstance(nugget, str) else None
        if merged is None:
            raise ValueError(f"merged nugget rejected: {answer[:80]!r}")
        return merged

    texts = list(dict.fromkeys(member.text for member in item.members))
    if len(texts) == 1:
        return item.text
    statements = "\n".join(f"- {text}" for text in texts)
    merged = await ask_parsed(
        client,
        "merge",
        {"question": question, "statements": statements},
        parse,
        about="a cluster (keeping its central member)",
        api=api,
        seed=seed,
        max_tokens=max_tokens,
        events=events,
        json_schema=merge_schema(max_chars),
    )
    return merged if merged is not None else item.text


IMPORTANCE_CHOICES = (Importance.VITAL.value, Importance.OKAY.value)


def parse_importance(answer: str) -> str:
    """``vital`` or ``okay``; raises ``ValueError`` for anything else."""
    answer = answer.strip().lower()
    if answer not in IMPORTANCE_CHOICES:
        raise ValueError(f"importance answer outside the choices: {answer!r}")
    return answer


async def llm_importance(
    client,
    question: str,
    nugget: str,
    *,
    api: str = "chat",
    seed: int | None = 0,
    events: Counter | None = None,
) -> str | None:
    """vital/okay from the LLM constrained to those two words; ``None`` (counted) when the call fails."""
    return await ask_parsed(
        client,
        "importance",
        {"question": question, "nugget": nugget},
        parse_importance,
        about=repr(nugget[:60]),
        api=api,
        seed=seed,
        max_tokens=4,
        events=events,
        choice=list(IMPORTANCE_CHOICES),
    )


def to_rubrics(
    qid: str, clusters: Sequence[Cluster], importances: Sequence[str], max_rubrics: int
) -> list[Rubric]:
    """Order vital first, then by passage support and retrieval rank; cap and number them."""
    order = sorted(
        range(len(clusters)),
        key=lambda i: (importances[i] != Importance.VITAL, -clusters[i].n_passages, clusters[i].best_rank, i),
    )[:max_rubrics]
    return [
        Rubric(
            rubric_id=f"{qid}-r{position}",
            text=clusters[i].text,
            importance=importances[i],
            weight=DEFAULT_WEIGHTS[importances[i]],
            sources=clusters[i].sources,
        )
        for position, i in enumerate(order)
    ]
