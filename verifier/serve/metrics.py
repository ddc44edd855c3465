"""The gateway's Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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
        self.engine_up = Gauge("rv_engine_up", "1 while an engine is in rotation", ["engine"], registry=r)
        self.engine_restarts = Counter(
            "rv_engine_restarts", "restarts of engines this server started", ["engine"], registry=r
        )
        self.queued_windows = Gauge(
            "rv_queued_windows", "rubric windows admitted, not yet answered", registry=r
        )
        self.rejected = Counter("rv_rejected", "requests refused before judging", ["reason"], registry=r)
        self.abandoned = Counter(
            "rv_abandoned_requests", "requests whose client hung up before the answer; their judging stopped",
            registry=r,
        )  # fmt: skip
