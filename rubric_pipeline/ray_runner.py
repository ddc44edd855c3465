"""The Ray runner of `rubric-verifier build` (``--runner ray``): the per-question stages on Ray Data.

The driver builds (or reuses) the saved index, then hands Ray a dataset with one row per batch of
``batch_size`` pending questions, the very batches the in-process runner forms, so both runners build the
same records. ``map_batches`` sends each row to one of ``ray_workers`` actors; every actor loads the saved
index once, memory-mapped and read-only (on one node the page cache holds a single copy for all of them),
opens its own LLM client to the ``--llm-url`` servers and its own web search client, and runs the same
:class:`~rubric_pipeline.stages.Builder` stages as the in-process build. Records stream back to the driver,
which appends each to ``progress.jsonl`` as it arrives: a killed run resumes exactly as the local one does.

Point it at a cluster with ``--ray-address`` (``auto`` on a node of a running cluster, or
``ray://HEAD:10001``); every node needs this package installed and the index folder and corpus at the
same path (shared storage), and the LLM URLs must be reachable from the workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from rubric_pipeline.build_config import BuildConfig
from rubric_pipeline.retrieval.hybrid import HybridRetriever
from rubric_pipeline.stages import Timer, open_builder

logger = logging.getLogger(__name__)


class BatchWorker:
    """A Ray Data actor: loads the saved index once, then builds one batch of questions per call."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = BuildConfig(**config)
        self.local = None
        if self.config.corpus is not None:
            self.local = HybridRetriever.load(
                self.config.index_dir,
                depth=self.config.depth,
                rrf_k=self.config.rrf_k,
                mmap=self.config.mmap,
                ivf_nprobe=self.config.ivf_nprobe,
                bm25_backend=self.config.bm25_backend,
            )

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[str]]:
        records, stats = [], []
        for row in batch["questions"]:  # batch_size=1 below: one row, one batch of questions
            built, summary = asyncio.run(self._build(json.loads(row)))
            records.extend(json.dumps(record, ensure_ascii=False) for record in built)
            stats.extend([json.dumps(summary)] + [""] * (len(built) - 1))
        return {"record": records, "stats": stats}

    async def _build(self, questions: list[list[str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        events, timer = Counter(), Timer()
        async with open_builder(self.config, self.local, events, timer) as builder:
            records = await builder.run_batch([(qid, text) for qid, text in questions])
            usage = dataclasses.asdict(builder.client.usage) if builder.client is not None else None
        return records, {"events": dict(events), "seconds": timer.seconds, "usage": usage}


def run_on_ray(
    config: BuildConfig,
    pending: list[tuple[str, str]],
    finished: Callable[[dict[str, Any]], None],
    events: Counter,
    timer: Timer,
    bars: Mapping[str, Any],
) -> dict[str, int] | None:
    """Build ``pending`` on Ray Data; ``finished`` gets each record as it arrives. Returns the LLM usage."""
    import ray

    started = not ray.is_initialized()
    if started:
        if config.ray_address:
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
        else:  # a private local cluster on this machine, shut down when the build ends
            ray.init(num_cpus=config.ray_workers, include_dashboard=False, log_to_driver=False)
    usage: dict[str, int] | None = None
    try:
        batches = [
            {"questions": json.dumps(pending[begin : begin + config.batch_size])}
            for begin in range(0, len(pending), config.batch_size)
        ]
        dataset = ray.data.from_items(batches, override_num_blocks=len(batches)).map_batches(
            BatchWorker,
            fn_constructor_kwargs={"config": dataclasses.asdict(config)},
            batch_size=1,
            concurrency=min(config.ray_workers, len(batches)),
            num_cpus=1,
        )
        logger.info("Ray: %d batches of questions on %d workers", len(batches), config.ray_workers)
        for row in dataset.iter_rows():
            finished(json.loads(row["record"]))
            for bar in bars.values():
                bar.update(1)
            if row["stats"]:
                summary = json.loads(row["stats"])
                events.update(summary["events"])
                for stage, seconds in summary["seconds"].items():  # summed over workers: busy time
                    timer.seconds[stage] += seconds
                if summary["usage"] is not None:
                    usage = {k: (usage or {}).get(k, 0) + v for k, v in summary["usage"].items()}
    finally:
        if started:
            ray.shutdown()
    return usage
