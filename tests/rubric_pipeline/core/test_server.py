from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from rubric_pipeline.core.server import BackgroundServer


def make_app(fail_on_startup: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if fail_on_startup:
            raise RuntimeError("refusing to start")
        app.state.ready = True
        yield
        app.state.ready = False

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": app.state.ready}

    return app


def test_serves_with_the_lifespan_run_and_releases_the_port_on_exit():
    app = make_app()
    with BackgroundServer(app, name="test-server") as server:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        assert httpx.get(f"{server.url}/ready", timeout=10).json() == {"ready": True}
    assert app.state.ready is False  # the lifespan's shutdown ran
    assert not server.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/ready", timeout=2)


def test_an_app_that_cannot_start_raises_instead_of_hanging():
    with (
        pytest.raises(RuntimeError, match="test-server did not start"),
        BackgroundServer(make_app(fail_on_startup=True), name="test-server", startup_timeout_s=10),
    ):
        pass
