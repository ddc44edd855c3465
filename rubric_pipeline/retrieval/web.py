"""Web search backends: a protocol, and an async client of the SearXNG JSON search API.

SearXNG answers ``GET {base}/search?q=...&format=json&pageno=N`` with
``{"query": ..., "results": [{"url", "title", "content", ...}], ...}``. Each result becomes a
:class:`Passage` whose ``doc_id`` is the result URL (fragment removed) and whose ``passage_id`` is
``f"{doc_id}#{sha1(content)[:10]}"``: stable across calls, distinct for different snippets of one page.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import httpx

from rubric_pipeline.core.errors import RubricVerifierError
from rubric_pipeline.core.http import RetryPolicy, send_with_retries
from rubric_pipeline.core.records import Passage

logger = logging.getLogger(__name__)


class WebSearchError(RubricVerifierError, RuntimeError):
    """A search request that failed for good: names the URL, attempts, HTTP status and reason."""

    def __init__(self, url: str, attempts: int, status: int | None, message: str):
        self.url, self.attempts, self.status = url, attempts, status
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"web search {url} failed after {attempts} attempt(s) ({status_text}): {message}")


@runtime_checkable
class WebSearchBackend(Protocol):
    """Anything that answers one query with up to ``k`` passages, best first."""

    async def search(self, query: str, k: int = 10) -> list[Passage]: ...


def result_to_passage(result: dict[str, Any]) -> Passage | None:
    """Map one SearXNG result to a passage; results without a URL or text are skipped (None)."""
    url = result.get("url")
    content = (result.get("content") or "").strip()
    if not isinstance(url, str) or not url or not content:
        return None
    doc_id = url.split("#", 1)[0]
    digest = hashlib.sha1(content.encode("utf-8")).hexdigest()[:10]
    title = result.get("title") if isinstance(result.get("title"), str) else None
    return Passage(passage_id=f"{doc_id}#{digest}", doc_id=doc_id, text=content, title=title or None, url=url)


class HTTPSearchBackend:
    """Async client of a SearXNG-compatible ``/search?format=json`` endpoint.

    Use as ``async with HTTPSearchBackend(url) as backend: await backend.search(q, k)``; outside a
    context each call opens its own connection pool. Requests are capped by ``max_concurrency``; transport
    errors and HTTP 429/5xx are retried with exponential backoff. Pages (``pageno``) are fetched in turn
    until ``k`` distinct passages are found, a page comes back empty, or ``max_pages`` is reached.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        max_concurrency: int = 8,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_pages: int = 5,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.max_concurrency = timeout_s, max_concurrency
        self.max_retries, self.backoff_s, self.max_pages = max_retries, backoff_s, max_pages
        self.params = dict(params or {})
        self.headers = {"Accept": "application/json", **(headers or {})}
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers)

    async def __aenter__(self) -> HTTPSearchBackend:
        self._client = self._new_client()
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client, self._semaphore = None, None

    async def _get_page(self, client: httpx.AsyncClient, query: str, page: int) -> list[dict[str, Any]]:
        url = f"{self.base_url}/search"
        params = {**self.params, "q": query, "format": "json", "pageno": str(page)}
        policy = RetryPolicy(self.max_retries, self.backoff_s, jitter=False)
        outcome = await send_with_retries(lambda attempt: client.get(url, params=params), policy, what=url)
        response, attempt = outcome.response, outcome.attempts
        if response is None or response.status_code != 200:
            status = response.status_code if response is not None else None
            raise WebSearchError(url, attempt, status, outcome.reason[:200])
        try:
            results = response.json().get("results")
        except ValueError as exc:
            raise WebSearchError(url, attempt, 200, f"invalid JSON ({exc})") from None
        if not isinstance(results, list):
            raise WebSearchError(url, attempt, 200, "response has no 'results' list")
        return results

    async def _search(self, client: httpx.AsyncClient, query: str, k: int) -> list[Passage]:
        passages: dict[str, Passage] = {}
        for page in range(1, self.max_pages + 1):
            results = await self._get_page(client, query, page)
            before = len(passages)
            for result in results:
                passage = result_to_passage(result) if isinstance(result, dict) else None
                if passage is not None:
                    passages.setdefault(passage.passage_id, passage)
            if len(passages) >= k or not results or len(passages) == before:
                break
        return list(passages.values())[:k]

    async def search(self, query: str, k: int = 10) -> list[Passage]:
        """Up to ``k`` passages for ``query``, in the engine's order."""
        if self._client is None or self._semaphore is None:
            async with self._new_client() as client:
                return await self._search(client, query, k)
        async with self._semaphore:
            return await self._search(self._client, query, k)

    async def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        """Search several queries concurrently (at most ``max_concurrency`` requests in flight)."""
        if self._client is None:
            async with self:
                return await self.search_many(queries, k)
        return list(await asyncio.gather(*(self.search(query, k) for query in queries)))

    def search_sync(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        """Blocking wrapper of :meth:`search_many` for callers outside an event loop."""
        return asyncio.run(self.search_many(queries, k))
