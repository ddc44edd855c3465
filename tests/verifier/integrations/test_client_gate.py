"""The adapters' pooled client under RL-sized bursts: thousands of calls at once, a bounded number sent."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request

from rubric_pipeline.core.server import BackgroundServer
from verifier.integrations import _client


def _counting_gateway(seen: dict[str, int]) -> FastAPI:
    """A stand-in /v1/judge that records how many requests it holds at once (the gate is what is tested)."""
    app = FastAPI()

    @app.post("/v1/judge")
    async def judge(request: Request) -> dict:
        items = (await request.json())["items"]
        seen["now"] += 1
        seen["peak"] = max(seen["peak"], seen["now"])
        await asyncio.sleep(0.01)
        seen["now"] -= 1
        return {"results": [{"labels": ["support"], "reward": 1.0} for _ in items]}

    return app


def test_a_burst_of_calls_waits_at_the_gate_not_in_the_pool(monkeypatch) -> None:
    monkeypatch.setattr(_client, "MAX_IN_FLIGHT", 8)
    seen = {"now": 0, "peak": 0}

    async def burst(url: str) -> list:
        items = [{"question": "q", "response": "r", "rubrics": ["x"]}]
        return await asyncio.gather(*(_client.post_judge(url, items) for _ in range(400)))

    with BackgroundServer(_counting_gateway(seen), name="gate-test") as server:
        results = asyncio.run(burst(server.url))
    assert len(results) == 400 and all(r == [{"labels": ["support"], "reward": 1.0}] for r in results)
    assert 1 < seen["peak"] <= 8
