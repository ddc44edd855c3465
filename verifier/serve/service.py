"""The reward service behind the gateway: plain async code, testable without HTTP.

:class:`RewardService` takes items ``(question, response, rubrics)``, guards degenerate responses before
any model call, sends every other item through one :class:`~verifier.judge.judges.Judge` (the served verifier:
``LLMJudge`` fans each item out into rubric windows sent concurrently), aggregates labels into a reward
and turns every failure into ``reward=None`` with a reason. It also owns admission (a bound on rubric
windows queued, :mod:`verifier.serve.admission`), the size limits and the Prometheus metrics, so the FastAPI
layer only validates, routes and renders. Each result carries the same numeric ``stats`` in every case
(support rate, vital coverage, flags, latency), which RL frameworks stack across samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from rubric_pipeline.core.records import RecordError, Rubric, RubricSet, iter_jsonl, parse_rubric_list
from verifier.judge.guard import DEGENERATE, is_degenerate
from verifier.judge.hints import response_stems, word_recall
from verifier.judge.judges import Judgement, Reason
from verifier.judge.reward import Aggregation, score, score_expected
from verifier.serve.admission import QueueFull, WorkQueue, windows_of
from verifier.serve.contract import STAT_KEYS
from verifier.serve.metrics import Metrics

logger = logging.getLogger(__name__)


# Reasons a result carries (typed: :class:`~verifier.judge.judges.Reason`); "degenerate" scores 0, every
# other one leaves the reward None.
NO_RUBRICS = Reason.NO_RUBRICS
TIMEOUT = Reason.TIMEOUT
ENGINE_ERROR = Reason.ENGINE_ERROR
UNPARSABLE = Reason.UNPARSABLE
UNSCORABLE = Reason.UNSCORABLE
PROMPT_MISMATCH = Reason.PROMPT_MISMATCH
OVERLOADED = Reason.OVERLOADED
UNJUDGEABLE_REASONS = (NO_RUBRICS, TIMEOUT, ENGINE_ERROR, UNPARSABLE, UNSCORABLE, PROMPT_MISMATCH, OVERLOADED)
__all__ = ["STAT_KEYS", "QueueFull"]  # used here, defined with the queue / the wire contract


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
    max_queued_windows: int = 32_768
    queue_wait_s: float = 50.0
    answer_within_s: float | None = 170.0  # /get_reward: inside OpenRLHF's 180 s client timeout


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
    reason: Reason | None = None
    stats: dict[str, float] = field(default_factory=dict)
    probs: list[dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "reward": self.reward,
            "error": self.error,
            "reason": self.reason,
            "stats": self.stats,
            "probs": self.probs,
        }


def item_stats(result: ItemResult, rubrics: Sequence[Rubric], latency_s: float) -> dict[str, float]:
    """``support_rate`` (share of rubrics labelled support), ``vital_coverage`` (nuggetizer's vital score,
    partial = 0.5), ``n_rubrics``, the ``judged`` / ``unjudgeable`` / ``degenerate`` flags (exactly one is
    1.0) and ``latency_s``. Without labels (degenerate, unjudgeable) or without a vital rubric the rates
    read 0.0: the flags and ``n_rubrics`` say which case it was."""
    labels = result.labels
    support = score(labels, rubrics, "strict_all").value if labels else None
    vital = score(labels, rubrics, "vital").value if labels else None
    degenerate = result.reason == DEGENERATE
    unjudgeable = result.reward is None
    return {
        "support_rate": support or 0.0,
        "vital_coverage": vital or 0.0,
        "n_rubrics": float(len(rubrics)),
        "judged": float(not degenerate and not unjudgeable),
        "unjudgeable": float(unjudgeable),
        "degenerate": float(degenerate),
        "latency_s": round(latency_s, 6),
    }


def parse_rubrics(value: Any, where: tuple[str | int, ...]) -> list[Rubric]:
    """Rubrics from a list of strings / rubric dicts, or a JSON string of one (OpenRLHF ``labels[i]``)."""
    try:
        return parse_rubric_list(value)
    except RecordError as exc:
        raise BadInput(where, str(exc)) from None


def load_rubric_sets(path: str | None) -> dict[str, RubricSet]:
    """RubricSet jsonl by qid, so that OpenRLHF ``labels[i]`` may name a rubric set."""
    if not path:
        return {}
    return {record["qid"]: RubricSet.from_dict(record) for _, record in iter_jsonl(path)}


class RewardService:
    """Judge items with one judge, aggregate to rewards, count everything."""

    def __init__(
        self,
        judge: Any,
        *,
        aggregation: Aggregation | str = Aggregation.WEIGHTED,
        limits: Limits | None = None,
        item_timeout_s: float = 120.0,
        rubric_sets: dict[str, RubricSet] | None = None,
        metrics: Metrics | None = None,
        first_window: int | None = None,
        unjudgeable_reward: float = 0.0,
        calibration: Any = None,
        items_at_once: int = 64,
    ):
        """``first_window=W``: an item with more than W rubrics is judged in two steps, its first W rubrics
        alone and then the rest (concurrently, inside the judge), so that the later windows find the
        prefix they share with the first (instructions, question, response) cached even on an engine that
        caches blocks only once computed (vLLM caches them when scheduled, so it gains nothing there).
        ``unjudgeable_reward``: what ``/get_reward`` answers for an unjudgeable sample (OpenRLHF batches
        rewards into a float tensor, so never ``null``); the sample stays flagged in ``extra_logs`` and
        counted as unjudgeable. ``/v1/judge`` answers ``reward: null`` whatever this is.
        ``calibration``: the :class:`~verifier.judge.calibration.Calibration` that ``calibrated`` uses.
        ``items_at_once``: items being judged at one time; the others wait their turn in arrival order,
        and ``item_timeout_s`` runs from an item's turn, so a burst of thousands of samples (an RL step)
        queues instead of timing out behind itself."""
        self.judge = judge
        self.first_window = first_window
        self.unjudgeable_reward = float(unjudgeable_reward)
        self.calibration = calibration
        self.aggregation = Aggregation(aggregation).value
        self.limits = limits or Limits()
        self.item_timeout_s = item_timeout_s
        self.rubric_sets = rubric_sets or {}
        self.metrics = metrics or Metrics()
        self.window = int(getattr(judge, "window", 0) or 10)
        self.queue = WorkQueue(self.limits.max_queued_windows)
        self._turns = asyncio.Semaphore(items_at_once)  # FIFO: earlier samples are judged first
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
    async def slot(self, items: Sequence[Item] = (), wait_s: float | None = None) -> AsyncIterator[None]:
        """Admit one request's windows, or raise :class:`QueueFull` (at once, or after ``wait_s``)."""
        windows = sum(windows_of(len(item.rubrics), self.window) for item in items) or 1
        try:
            async with self.queue.admit(windows, wait_s=wait_s):
                self._inflight += 1
                self.metrics.inflight.inc()
                self.metrics.queued_windows.set(self.queue.used)
                try:
                    yield
                finally:
                    self._inflight -= 1
                    self.metrics.inflight.dec()
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise
        finally:
            self.metrics.queued_windows.set(self.queue.used)

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
        self,
        items: Sequence[Item],
        aggregation: Aggregation | str | None = None,
        options: ProbOptions | None = None,
        *,
        wait_s: float | None = None,
        answer_within_s: float | None = None,
    ) -> list[ItemResult]:
        """Results in item order; ``wait_s`` waits that long for room in the queue instead of refusing;
        ``answer_within_s``: an item not judged by then comes back unjudgeable (``overloaded``), so that
        a client with a fixed timeout gets an answer, not a timeout."""
        options = options or ProbOptions()
        self.check_size(items)
        self.check_options(options)
        loop_time = asyncio.get_running_loop().time()
        deadline = None if answer_within_s is None else loop_time + answer_within_s  # for asyncio.timeout_at
        async with self.slot(items, wait_s):
            return list(
                await asyncio.gather(
                    *(self.judge_item(item, aggregation, options, deadline) for item in items)
                )
            )

    async def judge_item(
        self,
        item: Item,
        aggregation: Aggregation | str | None = None,
        options: ProbOptions | None = None,
        deadline: float | None = None,
    ) -> ItemResult:
        started = time.perf_counter()
        result = await self._judge_item(item, aggregation, started, options or ProbOptions(), deadline)
        result.stats = item_stats(result, item.rubrics, time.perf_counter() - started)
        return result

    async def _judge_item(
        self,
        item: Item,
        aggregation: Aggregation | str | None,
        started: float,
        options: ProbOptions,
        deadline: float | None = None,
    ) -> ItemResult:
        try:
            if is_degenerate(item.response):  # before any model call: openers and punctuation score 0
                return self._count(ItemResult(labels=None, reward=0.0, reason=Reason.DEGENERATE))
            if not item.rubrics:
                return self._count(ItemResult(None, None, "the item has no rubrics to judge", NO_RUBRICS))
            try:
                async with asyncio.timeout_at(deadline) as answer_by, self._turns:
                    judgement = await asyncio.wait_for(self._judge(item, options.any), self.item_timeout_s)
            except TimeoutError:
                if answer_by.expired():  # still waiting for a turn, or judging, when the answer was due
                    late = "not judged before the answer deadline"
                    return self._count(ItemResult(None, None, late, OVERLOADED))
                self.metrics.engine_errors.labels(TIMEOUT).inc()
                message = f"no judgement within {self.item_timeout_s:g}s"
                return self._count(ItemResult(None, None, message, TIMEOUT))
            except Exception as exc:  # the engine or the client failed: unjudgeable, never a silent 0
                logger.warning("judging failed: %s", exc)
                self.metrics.engine_errors.labels(ENGINE_ERROR).inc()
                return self._count(ItemResult(None, None, f"{type(exc).__name__}: {exc}", ENGINE_ERROR))
            if judgement.labels is None:
                reason = judgement.reason or ENGINE_ERROR
                if reason in (ENGINE_ERROR, TIMEOUT):
                    self.metrics.engine_errors.labels(reason).inc()
                return self._count(ItemResult(None, None, judgement.error or "no labels", reason))
            labels, probs = list(judgement.labels), judgement.probs
            if options.any and probs is None:  # asked for, not given: the item cannot be read as asked
                message = "the judge returned no label probabilities"
                return self._count(ItemResult(None, None, message, UNPARSABLE))
            if options.calibrated:
                labels = self.calibration.labels(probs, self._word_recall(item))
            mode = aggregation or self.aggregation
            if options.soft_reward:
                outcome = score_expected(probs, item.rubrics, mode)
            else:
                outcome = score(labels, item.rubrics, mode)
            shown = probs if options.return_probs else None
            if outcome.value is None:  # e.g. no vital rubric under a vital-only aggregation
                return self._count(ItemResult(labels, None, outcome.reason, UNSCORABLE, probs=shown))
            return self._count(ItemResult(labels, outcome.value, probs=shown))
        finally:
            self.metrics.item_latency.observe(time.perf_counter() - started)

    def _word_recall(self, item: Item) -> list[float] | None:
        """Each rubric's word recall in the response, when the calibration mixes it in."""
        if not self.calibration.needs_word_recall:
            return None
        present = response_stems(item.response)
        return [word_recall(present, rubric.text) for rubric in item.rubrics]

    async def _judge(self, item: Item, with_probs: bool = False) -> Judgement:
        """One judge call, or two (first window, then the rest) when ``first_window`` is set: only the
        first window of an item is serialised; items still run concurrently with each other."""
        window, rubrics = self.first_window, item.rubrics
        kwargs = {"with_probs": True} if with_probs else {}
        if not window or len(rubrics) <= window:
            return await self.judge.judge(item.question, item.response, rubrics, **kwargs)
        first = await self.judge.judge(item.question, item.response, rubrics[:window], **kwargs)
        if first.labels is None:  # unjudgeable already: spare the engine the other windows
            return Judgement(None, f"rubrics 1-{window}: {first.error}", first.raw, reason=first.reason)
        rest = await self.judge.judge(item.question, item.response, rubrics[window:], **kwargs)
        if rest.labels is None:
            error = f"rubrics {window + 1}-{len(rubrics)}: {rest.error}"
            return Judgement(None, error, first.raw + rest.raw, reason=rest.reason)
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

    def unjudgeable(self, items: Sequence[Item], reason: Reason, message: str) -> list[ItemResult]:
        """Results for items the service will not judge (e.g. no room in time), counted and with stats."""
        results = []
        for item in items:
            result = self._count(ItemResult(None, None, message, reason))
            result.stats = item_stats(result, item.rubrics, 0.0)
            results.append(result)
        return results
