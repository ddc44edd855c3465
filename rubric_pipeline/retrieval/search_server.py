"""A small search server speaking the SearXNG JSON format over a BM25 index of a local corpus.

``python -m rubric_pipeline.retrieval.search_server --corpus data/corpus.jsonl --port 8888`` serves
``GET /search?q=...&format=json&pageno=N`` so :class:`~rubric_pipeline.retrieval.web.HTTPSearchBackend`
(or any SearXNG client) can be exercised against a real HTTP server on 127.0.0.1. Results without a
``url`` in the corpus link to ``/doc/{doc_id}``, which this server also answers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import get_args
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request

from rubric_pipeline.core.server import BackgroundServer
from rubric_pipeline.corpus import (
    DEFAULT_CHUNK_BY,
    DEFAULT_CHUNK_WORDS,
    DEFAULT_OVERLAP_WORDS,
    Chunking,
    load_corpus,
)
from rubric_pipeline.retrieval.bm25 import BM25Index

logger = logging.getLogger(__name__)

ENGINE_NAME = "rubric-bm25"


def create_app(index: BM25Index, page_size: int = 10, max_pages: int = 20) -> FastAPI:
    """The FastAPI app; plain ``def`` handlers, so FastAPI runs the CPU-bound search in its threadpool."""
    app = FastAPI(title="rubric-verifier search server", version="1")
    documents: dict[str, list] = {}
    for passage in index.passages:
        documents.setdefault(passage.doc_id, []).append(passage)

    @app.get("/search")
    def search(
        request: Request,
        q: str = Query("", description="the query"),
        format: str = Query("html", description="only 'json' is served"),
        pageno: int = Query(1, ge=1, le=max_pages),
    ) -> dict:
        if format != "json":
            raise HTTPException(status_code=400, detail="only format=json is served")
        if not q.strip():
            raise HTTPException(status_code=400, detail="empty query")
        (hits,) = index.search([q], k=page_size * pageno)
        base = str(request.base_url).rstrip("/")
        results = [
            {
                "url": hit.passage.url or f"{base}/doc/{quote(hit.passage.doc_id, safe='')}",
                "title": hit.passage.title or hit.passage.doc_id,
                "content": hit.passage.text,
                "engine": ENGINE_NAME,
                "engines": [ENGINE_NAME],
                "positions": [hit.rank],
                "score": hit.score,
                "category": "general",
            }
            for hit in hits[page_size * (pageno - 1) :]
        ]
        return {
            "query": q,
            "number_of_results": len(hits),
            "results": results,
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }

    @app.get("/doc/{doc_id}")
    def document(doc_id: str) -> dict:
        passages = documents.get(doc_id)
        if not passages:
            raise HTTPException(status_code=404, detail=f"unknown document {doc_id!r}")
        return {"doc_id": doc_id, "passages": [passage.to_dict() for passage in passages]}

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "passages": len(index)}

    return app


@contextlib.contextmanager
def serve_in_thread(index: BM25Index, host: str = "127.0.0.1", page_size: int = 10) -> Iterator[str]:
    """Serve ``index`` on a free port of ``host`` in a background thread; yields the base URL."""
    with BackgroundServer(create_app(index, page_size), host=host, name="search-server") as server:
        yield server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="corpus JSONL file or datasets directory to index")
    source.add_argument("--index-dir", help="a BM25 index saved by BM25Index.save")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--page-size", type=int, default=10, help="results per page")
    parser.add_argument("--chunk-words", type=int, default=DEFAULT_CHUNK_WORDS)
    parser.add_argument("--overlap-words", type=int, default=DEFAULT_OVERLAP_WORDS)
    parser.add_argument("--chunk-by", choices=get_args(Chunking), default=DEFAULT_CHUNK_BY)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    if args.index_dir:
        index = BM25Index.load(args.index_dir)
    else:
        passages = load_corpus(
            args.corpus,
            chunk_words=args.chunk_words,
            overlap_words=args.overlap_words,
            chunk_by=args.chunk_by,
        )
        index = BM25Index(passages, show_progress=False)
    logger.info("serving %d passages on http://%s:%d/search", len(index), args.host, args.port)
    uvicorn.run(create_app(index, args.page_size), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
