"""Retrieval over passages: BM25 (bm25s), dense (sentence-transformers), RRF fusion, web search.

Every local retriever answers a batch of queries at once:
``search(queries, k) -> list[list[ScoredPassage]]``, one ranked list per query, best first.
"""
