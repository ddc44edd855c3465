"""Query rewriting: a question becomes several search queries.

With an LLM, each query is rewritten with the Search-Gen-V operations (at most three combined per rewrite)
under a JSON schema, expanding breadth-first up to a depth and a node budget. Without one, RM3-style
pseudo-relevance feedback adds the top terms of the best BM25 passages. Near-duplicate queries (token
Jaccard at or above a threshold) are dropped either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rubric_pipeline.core.text import content_tokens, jaccard, normalize, tokens
from rubric_pipeline.llm_call import ask_parsed

logger = logging.getLogger(__name__)

OPERATIONS: tuple[str, ...] = (
    "synonym",
    "hypernym",
    "hyponym",
    "entity_fuzzification",
    "entity_specification",
    "question_switch",
    "constraint",
)
MAX_OPERATIONS_PER_REWRITE = 3

# async (query) -> [(passage text, retrieval score)], best first: the feedback set for PRF.
FeedbackFn = Callable[[str], Awaitable[Sequence[tuple[str, float]]]]


@dataclass(frozen=True)
class QueryNode:
    """One query of the expansion tree; the root (depth 0) is the question itself."""

    query: str
    depth: int = 0
    parent: int | None = None
    operations: tuple[str, ...] = ()


@dataclass
class QueryDeduper:
    """Keeps queries whose token Jaccard with every kept query stays below ``threshold``."""

    threshold: float = 0.8
    kept: list[str] = field(default_factory=list)

    def add(self, query: str) -> bool:
        if not tokens(query) or any(jaccard(query, other) >= self.threshold for other in self.kept):
            return False
        self.kept.append(query)
        return True


def query_pattern(max_chars: int = 200) -> str:
    """A plain query: no quotes, brackets, underscores (operation names) or newlines; bounded length."""
    return rf'^[A-Za-z0-9][^"\\{{}}\[\]_\n\r\t]{{2,{max(max_chars - 1, 2)}}}$'


def rewrite_schema(n: int, max_chars: int = 200) -> dict:
    """JSON schema of one rewrite call: a list of 1..n ``{operations, query}`` objects."""
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": n,
        "items": {
            "type": "object",
            "properties": {
                "operations": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(OPERATIONS)},
                    "minItems": 1,
                    "maxItems": MAX_OPERATIONS_PER_REWRITE,
                },
                "query": {"type": "string", "pattern": query_pattern(max_chars)},
            },
            "required": ["operations", "query"],
            "additionalProperties": False,
        },
    }


def parse_rewrites(text: str) -> list[tuple[tuple[str, ...], str]]:
    """Parse a rewrite answer into ``(operations, query)`` pairs; raises ``ValueError`` when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"rewrite output is not JSON ({exc.msg}): {text[:80]!r}") from None
    if not isinstance(data, list):
        raise ValueError(f"rewrite output must be a JSON list, got {type(data).__name__}")
    rewrites: list[tuple[tuple[str, ...], str]] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("query"), str):
            raise ValueError(f"rewrite item without a query string: {item!r}")
        operations = tuple(dict.fromkeys(op for op in item.get("operations") or [] if op in OPERATIONS))
        if not operations or len(operations) > MAX_OPERATIONS_PER_REWRITE:
            raise ValueError(f"rewrite item needs 1-{MAX_OPERATIONS_PER_REWRITE} known operations: {item!r}")
        query = normalize(item["query"])
        if query:
            rewrites.append((operations, query))
    return rewrites


async def expand_with_llm(
    client,
    question: str,
    *,
    depth: int = 1,
    max_nodes: int = 6,
    per_call: int = 3,
    dedup_threshold: float = 0.8,
    max_chars: int = 200,
    max_tokens: int = 256,
    api: str = "chat",
    seed: int | None = 0,
    events: Counter | None = None,
) -> list[QueryNode]:
    """Breadth-first LLM rewriting. A failed or unparsable call is logged and counted, not fatal."""
    events = events if events is not None else Counter()
    nodes = [QueryNode(question)]
    deduper = QueryDeduper(dedup_threshold, [question])
    frontier = [0]
    for level in range(1, depth + 1):
        if not frontier or len(nodes) >= max_nodes:
            break
        # the frontier never exceeds max_nodes, so this gather is bounded by the node budget
        answers = await asyncio.gather(
            *(
                _rewrite_once(
                    client, question, nodes[i].query, per_call, max_chars, max_tokens, api, seed, events
                )
                for i in frontier
            )
        )
        next_frontier: list[int] = []
        for parent, rewrites in zip(frontier, answers, strict=True):
            for operations, query in rewrites:
                if len(nodes) >= max_nodes:
                    break
                if deduper.add(query):
                    nodes.append(QueryNode(query, level, parent, operations))
                    next_frontier.append(len(nodes) - 1)
                else:
                    events["rewrite.duplicates_dropped"] += 1
        frontier = next_frontier
    return nodes


async def _rewrite_once(
    client, question, query, per_call, max_chars, max_tokens, api, seed, events: Counter
) -> list[tuple[tuple[str, ...], str]]:
    rewrites = await ask_parsed(
        client,
        "rewrite",
        {"question": question, "query": query, "n": per_call},
        parse_rewrites,
        about=repr(query[:60]),
        api=api,
        seed=seed,
        max_tokens=max_tokens,
        events=events,
        json_schema=rewrite_schema(per_call, max_chars),
    )
    return rewrites or []


def prf_terms(query: str, feedback: Sequence[tuple[str, float]], n_terms: int = 8) -> list[tuple[str, float]]:
    """RM3-style relevance-model terms: sum over feedback passages of P(D|Q) * P(t|D), query terms excluded.

    P(D|Q) is the passage's retrieval score normalized over the feedback set; P(t|D) is the term's share of
    the passage's content tokens. Returns the top ``n_terms`` as ``(term, weight)``, best first.
    """
    positive = [(text, max(float(score), 0.0)) for text, score in feedback]
    total = sum(score for _, score in positive)
    if total <= 0:
        positive = [(text, 1.0) for text, _ in feedback]
        total = float(len(positive))
    if not positive:
        return []
    exclude = set(tokens(query))
    weights: Counter[str] = Counter()
    for text, score in positive:
        terms = content_tokens(text)
        if not terms:
            continue
        doc_weight = score / total
        for term, count in Counter(terms).items():
            if term not in exclude:
                weights[term] += doc_weight * count / len(terms)
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n_terms]


async def expand_offline(
    question: str,
    feedback_fn: FeedbackFn,
    *,
    depth: int = 1,
    max_nodes: int = 6,
    per_call: int = 2,
    n_terms: int = 6,
    dedup_threshold: float = 0.8,
) -> list[QueryNode]:
    """Breadth-first PRF expansion: each node yields ``per_call`` queries, the node plus successive blocks
    of ``n_terms`` relevance-model terms (so the queries reach different parts of the feedback set)."""
    nodes = [QueryNode(question)]
    deduper = QueryDeduper(dedup_threshold, [question])
    frontier = [0]
    for level in range(1, depth + 1):
        next_frontier: list[int] = []
        for parent in frontier:
            base = nodes[parent].query
            terms = [term for term, _ in prf_terms(base, await feedback_fn(base), n_terms * per_call)]
            for block in range(per_call):
                chosen = terms[block * n_terms : (block + 1) * n_terms]
                if not chosen or len(nodes) >= max_nodes:
                    break
                query = f"{base} {' '.join(chosen)}"
                if deduper.add(query):
                    nodes.append(QueryNode(query, level, parent, ("prf",)))
                    next_frontier.append(len(nodes) - 1)
        frontier = next_frontier
        if not frontier or len(nodes) >= max_nodes:
            break
    return nodes
