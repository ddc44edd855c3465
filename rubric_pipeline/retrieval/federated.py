"""What a build retrieves from: the local corpus, a web search backend, or both fused with RRF.

The local side is a :class:`~rubric_pipeline.retrieval.hybrid.HybridRetriever`; the web side any
:class:`~rubric_pipeline.retrieval.web.WebSearchBackend` (the SearXNG client). With both, each query's
local and web lists are fused by reciprocal rank fusion; a web result whose text is exactly a local
passage's counts as that passage, so agreement between the two sources is rewarded, not duplicated.
Web passages keep their URL and title, which the rubrics' sources carry as provenance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rubric_pipeline.core.records import Passage
from rubric_pipeline.retrieval.base import ScoredPassage
from rubric_pipeline.retrieval.fusion import RRF_K, rrf
from rubric_pipeline.retrieval.hybrid import HybridRetriever
from rubric_pipeline.retrieval.web import WebSearchBackend


class FederatedRetriever:
    """Local and/or web retrieval behind one async ``search(queries, k)``."""

    def __init__(
        self,
        local: HybridRetriever | None = None,
        web: WebSearchBackend | None = None,
        rrf_k: int = RRF_K,
    ) -> None:
        if local is None and web is None:
            raise ValueError("retrieval needs a local corpus, a web search backend, or both")
        self.local, self.web, self.rrf_k = local, web, rrf_k
        self._by_text = {passage.text: passage for passage in reversed(self.passages)}  # first one wins

    @property
    def passages(self) -> list[Passage]:
        """The local corpus (empty with the web alone)."""
        return self.local.passages if self.local is not None else []

    @property
    def kind(self) -> str:
        return "+".join(
            name for name, part in (("corpus", self.local), ("web", self.web)) if part is not None
        )

    async def search(self, queries: Sequence[str], k: int = 10) -> list[list[ScoredPassage]]:
        """Top-``k`` passages per query, best first (1-based ranks)."""
        queries = list(queries)
        local = self.local.search(queries, k) if self.local is not None else None
        if self.web is None:
            return local or []
        # the backend caps requests in flight; one coroutine per query of the batch
        web = await asyncio.gather(*(self.web.search(query, k) for query in queries))
        if local is None:
            return [self._ranked(passages, k) for passages in web]
        return [self._fuse(hits, passages, k) for hits, passages in zip(local, web, strict=True)]

    async def feedback(self, query: str, n: int) -> list[tuple[str, float]]:
        """Pseudo-relevance feedback ``(text, score)``: local BM25 when there is a corpus, else the web
        (scored 1 / (rrf_k + rank), the engine giving no comparable score)."""
        if self.local is not None:
            (hits,) = (self.local.bm25 or self.local).search([query], n)
        else:
            hits = self._ranked(await self.web.search(query, n), n)  # type: ignore[union-attr]
        return [(hit.passage.text, hit.score) for hit in hits]

    def _ranked(self, passages: Sequence[Passage], k: int) -> list[ScoredPassage]:
        return [
            ScoredPassage(passage, 1.0 / (self.rrf_k + rank), rank)
            for rank, passage in enumerate(passages[:k], start=1)
        ]

    def _fuse(self, local: Sequence[ScoredPassage], web: Sequence[Passage], k: int) -> list[ScoredPassage]:
        by_id = {hit.passage_id: hit.passage for hit in local}
        web_ids = []
        for passage in web:
            passage = self._by_text.get(passage.text, passage)
            by_id.setdefault(passage.passage_id, passage)
            web_ids.append(passage.passage_id)
        fused = rrf([[hit.passage_id for hit in local], web_ids], k=self.rrf_k)
        return [
            ScoredPassage(by_id[pid], score, rank) for rank, (pid, score) in enumerate(fused[:k], start=1)
        ]
