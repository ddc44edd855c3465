"""`build --runner ray` on a real local Ray cluster: the same records as the in-process build, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.demo_world import generate_world
from rubric_pipeline.pipeline import BuildConfig, build


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def progress_records(output: Path) -> dict[str, dict]:
    lines = (output / "progress.jsonl").read_text(encoding="utf-8").splitlines()[1:]
    return {record["rubric_set"]["qid"]: record for record in map(json.loads, lines)}


def test_ray_build_matches_the_local_build_and_resumes(ray_cluster, tmp_path: Path) -> None:
    world = generate_world(seed=0).write(tmp_path / "world")
    common = {
        "corpus": str(world / "corpus.jsonl"),
        "questions": str(world / "questions.jsonl"),
        "gold": str(world / "gold.jsonl"),
        "limit": 6,
        "batch_size": 2,
        "index_dir": str(tmp_path / "index"),  # built by the first run, memory-mapped by the Ray workers
        "dense_model": "minilm-static",
    }
    local = build(BuildConfig(**common), tmp_path / "local")
    assert local["questions"] == 6 and local["rubrics"] > 0

    first_four = {**common, "limit": 4}  # as if the run had been killed after two batches
    partial = build(BuildConfig(**first_four, runner="ray", ray_workers=2), tmp_path / "ray")
    assert partial["built_this_run"] == 4 and ray_cluster.is_initialized()  # a cluster it did not start
    resumed = build(BuildConfig(**common, runner="ray", ray_workers=2), tmp_path / "ray")
    assert resumed["resumed"] == 4 and resumed["built_this_run"] == 2

    assert progress_records(tmp_path / "ray") == progress_records(tmp_path / "local")
    trec = "rubrics.trec.jsonl"
    assert (tmp_path / "ray" / trec).read_bytes() == (tmp_path / "local" / trec).read_bytes()
    assert resumed["rubrics"] == local["rubrics"] and resumed["config_hash"] == local["config_hash"]
    # the workers' counters come back to the driver: the two Ray runs together count what the local one did
    summed = {k: partial["events"].get(k, 0) + resumed["events"].get(k, 0) for k in local["events"]}
    assert summed == local["events"]
