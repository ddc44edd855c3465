"""The one async OpenAI-compatible LLM client used by every stage that calls a model.

Chat (``/chat/completions``) and completions (``/completions``) against one or more servers (vLLM or any
OpenAI-compatible API), with a concurrency cap, jittered exponential-backoff retries on connection errors,
timeouts, 429 and 5xx (never on other 4xx), per-request timeouts, vLLM structured outputs, token-usage
accounting and an optional JSONL trace of every call. Several ``base_urls`` are balanced by least
outstanding requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from rubric_pipeline.core.config import option
from rubric_pipeline.core.errors import ConfigError, RubricVerifierError
from rubric_pipeline.core.http import RetryPolicy, send_with_retries

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass
class LLMConfig:
    base_urls: list[str] = option([], help="OpenAI-compatible base URLs, e.g. http://127.0.0.1:8000/v1")
    model: str = option("", help="model name sent in every request")
    api_key: str | None = option(None, help="bearer token, if the server wants one")
    max_concurrency: int = option(64, help="requests in flight at once, across all base URLs")
    max_retries: int = option(4, help="retries after the first try (connection errors, timeouts, 429, 5xx)")
    timeout_s: float = option(60.0, help="per-request timeout in seconds")
    backoff_s: float = option(0.5, help="first retry delay; doubles per retry, with jitter")
    trace_path: str | None = option(
        None, help="append a JSONL record of every call (request, output, wall-clock start, end) to this file"
    )

    @classmethod
    def for_endpoint(
        cls,
        urls: str | Sequence[str] | None,
        model: str | None,
        *,
        what: str = "an LLM call",
        need: str = "--llm-url and --model",
        **settings: Any,
    ) -> LLMConfig:
        """The one way a stage turns its options into an LLMConfig: the server URL (or URLs), the served
        model name and any other field (``timeout_s=...``); a setting given as None keeps the default.
        No URL or no model is a ConfigError saying ``what`` ``need``s."""
        base_urls = [urls] if isinstance(urls, str) else list(urls or [])
        if not base_urls or not model:
            raise ConfigError(f"{what} needs {need}")
        given = {name: value for name, value in settings.items() if value is not None}
        return cls(base_urls=base_urls, model=model, **given)


@dataclass
class Usage:
    """Token and call counts: one response's, or a client's running totals.

    ``requests`` counts calls that succeeded, ``failures`` calls that raised :class:`LLMError`, ``retries``
    the extra attempts made by either.
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    retries: int = 0

    def add(self, other: Usage) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Completion:
    texts: list[str]
    usage: Usage
    latency_s: float
    url: str
    finish_reasons: list[str | None] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list, repr=False)  # raw choices (logprobs, ...)

    @property
    def text(self) -> str:
        return self.texts[0]


class LLMError(RubricVerifierError, RuntimeError):
    """A call that failed for good: a non-retryable status, or retries exhausted; ``timed_out`` when the
    last attempt ran out of time (rather than being refused or answered with an error)."""

    def __init__(
        self, url: str, attempts: int, status: int | None, message: str, timed_out: bool = False
    ) -> None:
        self.url, self.attempts, self.status, self.timed_out = url, attempts, status, timed_out
        last = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"{url}: failed after {attempts} attempt(s), last {last}: {message}")


def structured_outputs(
    json_schema: dict[str, Any] | None = None, choice: list[str] | None = None, regex: str | None = None
) -> dict[str, Any] | None:
    """vLLM's ``structured_outputs`` body field (the old ``guided_*`` fields are ignored by vLLM >= 0.32)."""
    given = {k: v for k, v in (("json", json_schema), ("choice", choice), ("regex", regex)) if v is not None}
    if len(given) > 1:
        raise ValueError(f"give at most one of json_schema, choice, regex; got {sorted(given)}")
    return given or None


class LLMClient:
    """Async client; use as ``async with LLMClient(config) as client: await client.chat(...)``."""

    def __init__(self, config: LLMConfig) -> None:
        if not config.base_urls:
            raise ValueError("LLMConfig.base_urls is empty")
        self.config = config
        self.usage = Usage()
        self._urls = [url.rstrip("/") for url in config.base_urls]
        self._outstanding = dict.fromkeys(self._urls, 0)
        self._down: set[str] = set()  # out of rotation (see set_available); used only when all are
        self._next = 0  # round-robin tie break
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._http: httpx.AsyncClient | None = None
        self._policy = RetryPolicy(config.max_retries, config.backoff_s, MAX_BACKOFF_S)
        self._trace: IO[str] | None = None

    async def __aenter__(self) -> LLMClient:
        cap = self.config.max_concurrency
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout_s),
            limits=httpx.Limits(max_connections=cap, max_keepalive_connections=cap),
            headers=headers,
        )
        if self.config.trace_path:
            Path(self.config.trace_path).parent.mkdir(parents=True, exist_ok=True)
            self._trace = open(self.config.trace_path, "a", encoding="utf-8")  # noqa: SIM115
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    async def chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        """POST ``/chat/completions``; keyword arguments as in :meth:`request`."""
        return await self.request("/chat/completions", {"messages": messages}, **kwargs)

    async def complete(self, prompt: str | list[str], **kwargs: Any) -> Completion:
        """POST ``/completions``; keyword arguments as in :meth:`request`."""
        return await self.request("/completions", {"prompt": prompt}, **kwargs)

    async def request(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        n: int = 1,
        seed: int | None = None,
        stop: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        choice: list[str] | None = None,
        regex: str | None = None,
        extra_body: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> Completion:
        body: dict[str, Any] = {"model": model or self.config.model, **payload}
        body.update(max_tokens=max_tokens, temperature=temperature, n=n)
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        if (constraint := structured_outputs(json_schema, choice, regex)) is not None:
            body["structured_outputs"] = constraint
        body.update(extra_body or {})
        started, start = time.time(), time.perf_counter()
        try:
            completion = await self._post(path, body)
        except LLMError as err:
            self._write_trace(body, None, started, time.perf_counter() - start, err.url, str(err))
            raise
        self._write_trace(body, completion, started, completion.latency_s, completion.url, None)
        return completion

    def set_available(self, url: str, available: bool) -> None:
        """Take a base URL out of rotation (a health checker saw it down) or put it back."""
        (self._down.discard if available else self._down.add)(url.rstrip("/"))

    def _pick_url(self, avoid: str | None) -> str:
        """Least outstanding requests among the URLs in rotation; ties round-robin; a URL that just failed
        goes last."""
        count = len(self._urls)
        order = [self._urls[(self._next + i) % count] for i in range(count)]
        self._next = (self._next + 1) % count
        return min(order, key=lambda url: (url in self._down, url == avoid, self._outstanding[url]))

    async def _post(self, path: str, body: dict[str, Any]) -> Completion:
        if self._http is None:
            raise RuntimeError("LLMClient is not open: use `async with LLMClient(config) as client`")
        http, start, used = self._http, time.perf_counter(), [""]

        async def send(attempt: int) -> httpx.Response:
            async with self._semaphore:
                url = used[0] = self._pick_url(avoid=used[0] or None)
                self._outstanding[url] += 1
                try:
                    return await http.post(url + path, json=body)
                finally:
                    self._outstanding[url] -= 1

        def count_retry(attempt: int) -> None:
            self.usage.retries += 1

        outcome = await send_with_retries(send, self._policy, what=f"POST {path}", on_retry=count_retry)
        response = outcome.response
        if response is not None and response.status_code == 200:
            return self._completion(response, used[0], time.perf_counter() - start, outcome.attempts)
        self.usage.failures += 1
        status = response.status_code if response is not None else None
        timed_out = isinstance(outcome.error, httpx.TimeoutException)
        raise LLMError(used[0] + path, outcome.attempts, status, outcome.reason, timed_out)

    def _completion(self, response: httpx.Response, url: str, latency_s: float, attempts: int) -> Completion:
        try:
            data = response.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [(c["message"]["content"] or "") if "message" in c else c["text"] for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            self.usage.failures += 1
            message = f"malformed response ({exc!r}): {response.text[:300]}"
            raise LLMError(url, attempts, 200, message) from exc
        raw_usage = data.get("usage") or {}
        usage = Usage(
            requests=1,
            prompt_tokens=raw_usage.get("prompt_tokens") or 0,
            completion_tokens=raw_usage.get("completion_tokens") or 0,
            retries=attempts - 1,
        )
        self.usage.requests += 1
        self.usage.prompt_tokens += usage.prompt_tokens
        self.usage.completion_tokens += usage.completion_tokens
        return Completion(texts, usage, latency_s, url, [c.get("finish_reason") for c in choices], choices)

    def _write_trace(
        self,
        body: dict[str, Any],
        done: Completion | None,
        started: float,
        latency_s: float,
        url: str,
        error: str | None,
    ) -> None:
        if self._trace is None:
            return
        record = {
            "started": started,
            "time": time.time(),
            "url": url,
            "request": body,
            "texts": done.texts if done else None,
            "finish_reasons": done.finish_reasons if done else None,
            "usage": asdict(done.usage) if done else None,
            "latency_s": round(latency_s, 6),
            "error": error,
        }
        self._trace.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._trace.flush()


def chat_sync(config: LLMConfig, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
    """One chat call for non-async callers (opens and closes its own client)."""

    async def _one() -> Completion:
        async with LLMClient(config) as client:
            return await client.chat(messages, **kwargs)

    return asyncio.run(_one())
