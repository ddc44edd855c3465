"""Search-Gen-V's query -> passage -> query tree (LLM path of the rewrite stage).

The question is the root query. Each query is searched; every passage it returns that is new to the tree
(and, with ``relevance_filter``, that the LLM judges useful for the question) becomes a child node. Each
passage node is then expanded breadth-first: the LLM rewrites the query that found it, conditioned on the
passage (what it mentions that the query did not), into up to ``per_passage`` new queries; those that are
not duplicates of a query already in the tree (token Jaccard, then with ``llm_dedup`` an LLM judge) become
its children and are searched in turn. Expansion stops at ``max_depth`` levels (a query at depth d finds
passages at d + 1) or ``max_nodes`` nodes of both kinds; Search-Gen-V runs it up to 30 / 300.

A level of the tree is expanded concurrently (its rewrites, searches and judgements go through the one LLM
client together); nodes are then added in frontier order, so a run is deterministic for a given model,
seed and corpus. The duplicate judge compares a new query with the queries that were in the tree when its
level started (and Jaccard with every kept one). A failed rewrite adds nothing; a failed duplicate judgement
counts the query as a duplicate and a failed relevance judgement keeps the passage: each is counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rubric_pipeline.core.records import Passage
from rubric_pipeline.llm_call import ask_parsed
from rubric_pipeline.rewrite import QueryDeduper, parse_rewrites, rewrite_schema

# async (query) -> passages, best first
SearchFn = Callable[[str], Awaitable[Sequence[Passage]]]
DUPLICATE_CHOICES = ("duplicate", "new")
RELEVANCE_CHOICES = ("yes", "no")
JUDGE_BATCH = 5  # existing queries shown per duplicate judgement (as Search-Gen-V)


@dataclass(frozen=True)
class TreeNode:
    """A node of the tree: a query (``passage`` None) or a retrieved passage (``query`` = the one that
    found it). ``parent`` indexes the node list; the root query has none."""

    query: str
    depth: int
    parent: int | None = None
    passage: Passage | None = None
    operations: tuple[str, ...] = ()

    @property
    def is_query(self) -> bool:
        return self.passage is None


@dataclass
class TreeSettings:
    max_depth: int = 3
    max_nodes: int = 30
    per_passage: int = 3
    dedup_threshold: float = 0.8
    llm_dedup: bool = True
    relevance_filter: bool = True
    passage_chars: int = 1500
    max_chars: int = 200
    max_tokens: int = 256


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(answer: str) -> str:
        answer = answer.strip().lower()
        if answer not in options:
            raise ValueError(f"answer outside the choices {options}: {answer!r}")
        return answer

    return parse


class TreeBuilder:
    """Grows one question's tree; ``llm`` holds the keywords of every call (api, seed, events)."""

    def __init__(self, client, search: SearchFn, settings: TreeSettings, **llm) -> None:
        self.client, self.search, self.settings = client, search, settings
        self.llm = llm
        self.events: Counter = llm.setdefault("events", Counter())

    async def _ask(self, template: str, values: dict, parse, about: str, **kwargs):
        kwargs.setdefault("max_tokens", 4)
        return await ask_parsed(self.client, template, values, parse, about=about, **self.llm, **kwargs)

    async def _rewrite(self, question: str, node: TreeNode) -> list[tuple[tuple[str, ...], str]]:
        s = self.settings
        values = {
            "question": question,
            "query": node.query,
            "passage": node.passage.text[: s.passage_chars],  # type: ignore[union-attr]
            "n": s.per_passage,
        }
        schema = rewrite_schema(s.per_passage, s.max_chars)
        about = f"passage {node.passage.passage_id}"  # type: ignore[union-attr]
        answer = await self._ask(
            "rewrite_passage", values, parse_rewrites, about, max_tokens=s.max_tokens, json_schema=schema
        )
        return (answer or [])[: s.per_passage]

    async def _is_duplicate(self, query: str, existing: list[str]) -> bool:
        for begin in range(0, len(existing), JUDGE_BATCH):
            listed = "\n".join(f"- {text}" for text in existing[begin : begin + JUDGE_BATCH])
            answer = await self._ask(
                "duplicate",
                {"query": query, "existing": listed},
                _choice(DUPLICATE_CHOICES),
                repr(query[:60]),
                choice=list(DUPLICATE_CHOICES),
            )
            if answer != "new":  # a failed judgement (None) keeps the tree from growing a repeat
                return True
        return False

    async def _is_relevant(self, question: str, passage: Passage) -> bool:
        answer = await self._ask(
            "relevance",
            {"question": question, "passage": passage.text[: self.settings.passage_chars]},
            _choice(RELEVANCE_CHOICES),
            f"passage {passage.passage_id}",
            choice=list(RELEVANCE_CHOICES),
        )
        return answer != "no"  # a failed judgement keeps the passage (counted by ask_parsed)

    async def build(self, question: str) -> list[TreeNode]:
        s = self.settings
        nodes = [TreeNode(question, 0)]
        deduper = QueryDeduper(s.dedup_threshold, [question])
        seen: set[str] = set()
        queries = [0]  # query nodes still to search
        while queries and len(nodes) < s.max_nodes:
            searched = [i for i in queries if nodes[i].depth < s.max_depth]
            found = await asyncio.gather(*(self.search(nodes[i].query) for i in searched))
            fresh: list[tuple[int, Passage]] = []
            for i, passages in zip(searched, found, strict=True):
                for passage in passages:
                    if passage.passage_id not in seen:
                        seen.add(passage.passage_id)
                        fresh.append((i, passage))
            keep = [True] * len(fresh)
            if s.relevance_filter:
                keep = await asyncio.gather(*(self._is_relevant(question, p) for _, p in fresh))
                self.events["tree.passages_filtered"] += keep.count(False)
            frontier = []
            for (parent, passage), kept in zip(fresh, keep, strict=True):
                if kept and len(nodes) < s.max_nodes:
                    nodes.append(TreeNode(nodes[parent].query, nodes[parent].depth + 1, parent, passage))
                    frontier.append(len(nodes) - 1)
            expandable = [i for i in frontier if nodes[i].depth < s.max_depth]
            rewrites = await asyncio.gather(*(self._rewrite(question, nodes[i]) for i in expandable))
            candidates = [
                (parent, operations, query)
                for parent, answer in zip(expandable, rewrites, strict=True)
                for operations, query in answer
            ]
            existing = [node.query for node in nodes if node.is_query]
            unique = [deduper.add(query) for _, _, query in candidates]
            if s.llm_dedup:
                pending = [q for (_, _, q), ok in zip(candidates, unique, strict=True) if ok]
                judged = await asyncio.gather(*(self._is_duplicate(q, existing) for q in pending))
                verdicts = iter(judged)
                unique = [ok and not next(verdicts) for ok in unique]
            self.events["rewrite.duplicates_dropped"] += unique.count(False)
            queries = []
            for (parent, operations, query), ok in zip(candidates, unique, strict=True):
                if ok and len(nodes) < s.max_nodes:
                    nodes.append(TreeNode(query, nodes[parent].depth + 1, parent, None, operations))
                    queries.append(len(nodes) - 1)
        return nodes


async def expand_tree(
    client, question: str, search: SearchFn, settings: TreeSettings | None = None, **llm
) -> list[TreeNode]:
    """The query -> passage -> query tree of one question (nodes in breadth-first order)."""
    return await TreeBuilder(client, search, settings or TreeSettings(), **llm).build(question)
