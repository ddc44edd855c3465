"""The reward service behind the gateway: plain async code, testable without HTTP.

:class:`RewardService` takes items ``(question, response, rubrics)``, guards degenerate responses before
any model call, sends every other item through one :class:`~verifier.judge.judges.Judge` (the served verifier:
``LLMJudge`` fans each item out into rubric windows sent concurrently), aggregates labels into a reward
and turns every failure into ``reward=None`` with a reason. It also owns the bounded in-flight queue, the
size limits and the Prometheus metrics, so the FastAPI layer only validates, routes and renders.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rubric_pipeline.core.records import Rubric, RubricSet, iter_jsonl
from verifier.judge.guard import DEGENERATE
from verifier.judge.judges import Judgement

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Reasons a result carries; "degenerate" scores 0, every other one leaves the reward None.
NO_RUBRICS = "no_rubrics"
TIMEOUT = "timeout"
ENGINE_ERROR = "engine_error"
UNPARSABLE = "unparsable"
UNSCORABLE = "unscorable"
UNJUDGEABLE_REASONS = (NO_RUBRICS, TIMEOUT, ENGINE_ERROR, UNPARSABLE, UNSCORABLE)


class QueueFull(RuntimeError):
    """More requests in flight than the queue allows (HTTP 503)."""


class TooLarge(ValueError):
    """A request over the size limits (HTTP 413); the message says which limit."""


class BadInput(ValueError):
    """A field that validates as JSON but not as rubrics (HTTP 422); ``loc`` names the field."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


@dataclass
class Limits:
    max_items: int = 256
    max_rubrics: int = 256
    max_chars: int = 60_000
    max_queue: int = 512


@dataclass
class Item:
    question: str
    response: str
    rubrics: list[Rubric]


@dataclass(frozen=True)
class ProbOptions:
    """``/v1/judge`` options that need label probabilities: ``return_probs`` adds each rubric's
    distribution, ``soft_reward`` makes ``reward`` the expected score, ``calibrated`` takes the labels (and
    the hard reward) from the served model's ``calibration.json`` thresholds."""

    return_probs: bool = False
    soft_reward: bool = False
    calibrated: bool = False

    @property
    def any(self) -> bool:
        return self.return_probs or self.soft_reward or self.calibrated


@dataclass
class ItemResult:
    labels: list[str] | None
    reward: float | None
    error: str | None = None
    reason: str | None = None
    probs: list[dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "reward": self.reward,
            "error": self.error,
            "reason": self.reason,
            "probs": self.probs,
        }


@dataclass
class Metrics:
    """Prometheus metrics in a private registry (several services may live in one process)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "rv_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "rv_request_latency_seconds", "request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.judgements = Counter("rv_judgements", "items answered, by outcome", ["outcome"], registry=r)
        self.rubric_judgements = Counter("rv_rubric_judgements", "rubric labels produced", registry=r)
        self.unjudgeable = Counter(
            "rv_unjudgeable", "items left without a reward, by reason", ["reason"], registry=r
        )
        self.item_latency = Histogram(
            "rv_item_latency_seconds", "latency of one item's judgement", buckets=LATENCY_BUCKETS, registry=r
        )
        self.engine_errors = Counter(
            "rv_engine_errors", "engine failures (errors and timeouts)", ["kind"], registry=r
        )
        self.inflight = Gauge("rv_inflight_requests", "requests queued or being judged", registry=r)
        self.rejected = Counter("rv_rejected", "requests refused before judging", ["reason"], registry=r)


def parse_rubrics(value: Any, where: tuple[str | int, ...]) -> list[Rubric]:
    """Rubrics from a list of strings / rubric dicts, or a JSON string of one (OpenRLHF ``labels[i]``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadInput(where, f"expected a JSON list of rubrics ({exc.msg})") from None
    if isinstance(value, dict) and "rubrics" in value:
        value = value["rubrics"]
    if not isinstance(value, list):
        raise BadInput(where, f"expected a list of rubrics, got {type(value).__name__}")
    rubrics = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str | dict) or (
            isinstance(entry, dict) and not isinstance(entry.get("text"), str)
        ):
            raise BadInput((*where, index), "a rubric is a string or an object with a string 'text'")
        try:
            rubrics.append(Rubric.from_dict(entry, index))
        except (ValueError, TypeError) as exc:
            raise BadInput((*where, index), str(exc)) from None
    return rubrics


def load_rubric_sets(path: str | None) -> dict[str, RubricSet]:
    """RubricSet jsonl by qid, so that OpenRLHF ``labels[i]`` may name a rubric set."""
    if not path:
        return {}
    return {record["qid"]: RubricSet.from_dict(record) for _, record in iter_jsonl(path)}


def response_from_query(query: str, prompt: str) -> str:
    """OpenRLHF sends prompt + response as ``query``; the response is what follows the prompt."""
    return query[len(prompt) :] if prompt and query.startswith(prompt) else query


class RewardService:
    """Judge items with one judge, aggregate to rewards, count everything."""

    def __init__(
        self,
        judge: Any,
        *,
        aggregation: str = "weighted",
        limits: Limits | None = None,
        item_timeout_s: float = 120.0,
        rubric_sets: dict[str, RubricSet] | None = None,
        metrics: Metrics | None = None,
        first_window: int | None = None,
        unjudgeable_reward: float | None = None,
        calibration: Any = None,
    ):
        """``first_window=W``: an item with more than W rubrics is judged in two steps, its first W rubrics
        alone and then the rest (concurrently, inside the judge), so that the later windows find the
        prefix they share with the first (instructions, question, response) cached even on an engine that
        caches blocks only once computed (vLLM caches them when scheduled, so it gains nothing there).
        ``unjudgeable_reward``: what ``/get_reward`` answers in place of ``null`` (OpenRLHF batches rewards
        into a float tensor); the sample stays flagged in ``extra_logs`` and counted as unjudgeable.
        ``calibration``: the :class:`~verifier.judge.calibration.Calibration` that ``calibrated`` uses."""
        from verifier.judge.reward import Aggregation

        self.judge = judge
        self.first_window = first_window
        self.unjudgeable_reward = unjudgeable_reward
        self.calibration = calibration
        self.aggregation = Aggregation(aggregation).value
        self.limits = limits or Limits()
        self.item_timeout_s = item_timeout_s
        self.rubric_sets = rubric_sets or {}
        self.metrics = metrics or Metrics()
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    # ------------------------------------------------------------------ admission

    def check_size(self, items: Sequence[Item]) -> None:
        limits = self.limits
        if len(items) > limits.max_items:
            self.metrics.rejected.labels("too_many_items").inc()
            raise TooLarge(f"{len(items)} items in one request; the limit is {limits.max_items}")
        for index, item in enumerate(items):
            if len(item.rubrics) > limits.max_rubrics:
                self.metrics.rejected.labels("too_many_rubrics").inc()
                raise TooLarge(
                    f"items[{index}] has {len(item.rubrics)} rubrics; the limit is {limits.max_rubrics}"
                )
            chars = len(item.question) + len(item.response) + sum(len(r.text) for r in item.rubrics)
            if chars > limits.max_chars:
                self.metrics.rejected.labels("too_many_chars").inc()
                raise TooLarge(f"items[{index}] has {chars} characters; the limit is {limits.max_chars}")

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit one request or raise :class:`QueueFull`; the queue bounds memory and latency under load."""
        if self._inflight >= self.limits.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(f"{self._inflight} requests in flight; the queue holds {self.limits.max_queue}")
        self._inflight += 1
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()

    # ------------------------------------------------------------------ judging

    def check_options(self, options: ProbOptions) -> None:
        """Refuse (422) probability options this service cannot honour, before any judging."""
        if options.any and not getattr(self.judge, "supports_probs", False):
            raise BadInput(("body", "return_probs"), f"judge {self.judge.name!r} gives no probabilities")
        if options.calibrated and self.calibration is None:
            raise BadInput(
                ("body", "calibrated"),
                "no calibration for the served model (calibration.json in its folder or serve --calibration)",
            )

    async def judge_items(
        self, items: Sequence[Item], aggregation: str | None = None, options: ProbOptions | None = None
    ) -> list[ItemResult]:
        """Results in item order. Concurrency is bounded by the size limit here and by the client below."""
        options = options or ProbOptions()
        self.check_size(items)
        self.check_options(options)
        async with self.slot():
            return list(
                await asyncio.gather(*(self.judge_item(item, aggregation, options) for item in items))
            )

    async def judge_item(
        self, item: Item, aggregation: str | None = None, options: ProbOptions | None = None
    ) -> ItemResult:
        from verifier.judge.guard import is_degenerate
        from verifier.judge.reward import score, score_expected

        options = options or ProbOptions()

        started = time.perf_counter()
        try:
            if is_degenerate(item.response):  # before any model call: openers and punctuation score 0
                return self._count(ItemResult(labels=None, reward=0.0, reason=DEGENERATE))
            if not item.rubrics:
                return self._count(ItemResult(None, None, "the item has no rubrics to judge", NO_RUBRICS))
            try:
                judgement = await asyncio.wait_for(self._judge(item, options.any), self.item_timeout_s)
            except TimeoutError:
                self.metrics.engine_errors.labels(TIMEOUT).inc()
                message = f"no judgement within {self.item_timeout_s:g}s"
                return self._count(ItemResult(None, None, message, TIMEOUT))
            except Exception as exc:  # the engine or the client failed: unjudgeable, never a silent 0
                logger.warning("judging failed: %s", exc)
                self.metrics.engine_errors.labels(ENGINE_ERROR).inc()
                return self._count(ItemResult(None, None, f"{type(exc).__name__}: {exc}", ENGINE_ERROR))
            if judgement.labels is None:
                reason = classify_error(judgement.error)
                if reason == ENGINE_ERROR:
                    self.metrics.engine_errors.labels(ENGINE_ERROR).inc()
                return self._count(ItemResult(None, None, judgement.error or "no labels", reason))
            labels, probs = list(judgement.labels), judgement.probs
            if options.calibrated and probs is not None:
                labels = self.calibration.labels(probs)
            mode = aggregation or self.aggregation
            if options.soft_reward:
                outcome = score_expected(probs, item.rubrics, mode)
            else:
                outcome = score(labels, item.rubrics, mode)
            shown = probs if options.return_probs else None
            if outcome.value is None:  # e.g. no vital rubric under a vital-only aggregation
                return self._count(ItemResult(labels, None, outcome.reason, UNSCORABLE, shown))
            return self._count(ItemResult(labels, outcome.value, probs=shown))
        finally:
            self.metrics.item_latency.observe(time.perf_counter() - started)

    async def _judge(self, item: Item, with_probs: bool = False) -> Judgement:
        """One judge call, or two (first window, then the rest) when ``first_window`` is set: only the
        first window of an item is serialised; items still run concurrently with each other."""
        window, rubrics = self.first_window, item.rubrics
        kwargs = {"with_probs": True} if with_probs else {}
        if not window or len(rubrics) <= window:
            return await self.judge.judge(item.question, item.response, rubrics, **kwargs)
        first = await self.judge.judge(item.question, item.response, rubrics[:window], **kwargs)
        if first.labels is None:  # unjudgeable already: spare the engine the other windows
            return Judgement(None, f"rubrics 1-{window}: {first.error}", first.raw)
        rest = await self.judge.judge(item.question, item.response, rubrics[window:], **kwargs)
        if rest.labels is None:
            return Judgement(None, f"rubrics {window + 1}-{len(rubrics)}: {rest.error}", first.raw + rest.raw)
        probs = first.probs + rest.probs if first.probs is not None and rest.probs is not None else None
        return Judgement(first.labels + rest.labels, raw=first.raw + rest.raw, probs=probs)

    def _count(self, result: ItemResult) -> ItemResult:
        if result.reason == DEGENERATE:
            self.metrics.judgements.labels(DEGENERATE).inc()
        elif result.reward is None:
            self.metrics.judgements.labels("unjudgeable").inc()
            self.metrics.unjudgeable.labels(result.reason or UNPARSABLE).inc()
        else:
            self.metrics.judgements.labels("judged").inc()
            self.metrics.rubric_judgements.inc(len(result.labels or ()))
        return result

    # ------------------------------------------------------------------ OpenRLHF

    def openrlhf_items(self, query: list[str], prompts: list[str], labels: list[Any]) -> list[Item]:
        """Build items from OpenRLHF's ``{query, prompts, labels}``; ``labels[i]`` holds rubrics or a qid."""
        if not len(query) == len(prompts) == len(labels):
            raise BadInput(
                ("body",),
                f"query, prompts, labels differ in length: {len(query)}, {len(prompts)}, {len(labels)}",
            )
        items = []
        for index, (text, prompt, label) in enumerate(zip(query, prompts, labels, strict=True)):
            response = response_from_query(text, prompt)
            if isinstance(label, str) and label in self.rubric_sets:
                rubric_set = self.rubric_sets[label]
                items.append(Item(rubric_set.question, response, rubric_set.rubrics))
                continue
            items.append(Item(prompt, response, parse_rubrics(label, ("body", "labels", index))))
        return items

    async def openrlhf_rewards(
        self, query: list[str], prompts: list[str], labels: list[Any]
    ) -> dict[str, Any]:
        """OpenRLHF's response. An unjudgeable sample's reward is ``null``, or ``unjudgeable_reward`` when
        set; either way ``extra_logs`` flags it (``unjudgeable=1``, ``judged=0`` and one
        ``unjudgeable/<reason>`` key per reason, all numeric so OpenRLHF can average them)."""
        results = await self.judge_items(self.openrlhf_items(query, prompts, labels))
        unjudgeable = [r.reward is None for r in results]
        fallback = self.unjudgeable_reward
        rewards = [
            fallback if missing and fallback is not None else r.reward
            for r, missing in zip(results, unjudgeable, strict=True)
        ]
        extra_logs = {
            "judged": [
                0.0 if missing or r.reason == DEGENERATE else 1.0
                for r, missing in zip(results, unjudgeable, strict=True)
            ],
            "degenerate": [1.0 if r.reason == DEGENERATE else 0.0 for r in results],
            "unjudgeable": [float(missing) for missing in unjudgeable],
        }
        for reason in UNJUDGEABLE_REASONS:  # a fixed key set: every response has the same keys
            extra_logs[f"unjudgeable/{reason}"] = [
                1.0 if missing and (r.reason or UNPARSABLE) == reason else 0.0
                for r, missing in zip(results, unjudgeable, strict=True)
            ]
        return {"rewards": rewards, "scores": rewards, "extra_logs": extra_logs}


def classify_error(error: str | None) -> str:
    """Map a judge's error text to a metric reason (the judge reports errors as text)."""
    text = (error or "").lower()
    if "timeout" in text or "timed out" in text:
        return TIMEOUT
    if "request failed" in text:  # LLMJudge's wording for an LLMError (connection, 5xx, retries spent)
        return ENGINE_ERROR
    if "unparsable" in text or "parse" in text:
        return UNPARSABLE
    if "no rubrics" in text:
        return NO_RUBRICS
    return ENGINE_ERROR
