"""Engine supervision against real processes: vLLM killed with SIGKILL is restarted by `serve`, the gateway
killed with SIGKILL leaves no vLLM process behind, and an engine given by URL leaves the rotation while a
real network fault cuts it off and comes back after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from verifier.serve.cli import ServeConfig, build_app
from verifier.serve.engine import free_port

ITEM = {"question": "Which river flows through Varn?", "response": "The Sella river.", "rubrics": ["Sella"]}


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def engine_server(gateway: psutil.Process) -> psutil.Process:
    for child in gateway.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child
    raise AssertionError("no vLLM API server among the gateway's children")


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def health(url: str) -> tuple[int, dict]:
    try:
        response = httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


@pytest.mark.vllm
def test_killed_engine_is_restarted_and_a_killed_gateway_leaves_no_vllm(tiny_model_dir, tmp_path: Path):
    port, engine_port = free_port(), free_port()
    flags = ["--model", str(tiny_model_dir), "--port", str(port), "--engine-port", str(engine_port)]
    flags += ["--health-interval-s", "0.5", "--engine-retries", "1", "--engine-timeout-s", "10"]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "serve", *flags], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: health(url)[0] == 200 or gateway.poll() is not None, 240, "the gateway")
        assert gateway.poll() is None, log_path.read_text()[-3000:]
        judged = httpx.post(f"{url}/v1/judge", json={"items": [ITEM]}, timeout=60).json()["results"][0]
        assert judged["reward"] is not None

        # 1. kill -9 the vLLM API server alone, as a crash would: its EngineCore is left running
        server = engine_server(psutil.Process(gateway.pid))
        first_group = os.getpgid(server.pid)
        assert len(group_members(first_group)) >= 2  # API server + EngineCore (+ workers)
        os.kill(server.pid, signal.SIGKILL)
        _, body = wait_for(lambda: (s := health(url))[0] == 503 and s, 15, "/health 503")
        assert body["status"] == "unavailable" and list(body["engines"].values()) == ["restarting"]
        started = time.monotonic()
        down = httpx.post(f"{url}/v1/judge", json={"items": [ITEM]}, timeout=60).json()["results"][0]
        assert down["reward"] is None and down["reason"] == "engine_error" and down["error"]
        assert time.monotonic() - started < 30  # unjudgeable with a reason, never a hang
        wait_for(lambda: not group_members(first_group), 30, "the dead engine's processes to go")

        # 2. the supervisor restarts it on the same port; judging resumes by itself
        _, body = wait_for(lambda: (s := health(url))[0] == 200 and s, 240, "the restarted engine")
        assert body["status"] == "ok" and next(iter(body["engine_detail"].values()))["restarts"] == 1
        again = httpx.post(f"{url}/v1/judge", json={"items": [ITEM]}, timeout=60).json()["results"][0]
        assert again["reward"] is not None and again["labels"] is not None
        assert "rv_engine_restarts_total" in httpx.get(f"{url}/metrics", timeout=10).text

        # 3. kill -9 the gateway: the watchdog takes the engine's whole group down
        server = engine_server(psutil.Process(gateway.pid))
        group = os.getpgid(server.pid)
        assert len(group_members(group)) >= 2
        gateway.kill()
        gateway.wait(timeout=10)
        wait_for(lambda: not group_members(group), 30, "every vLLM process of the killed gateway to go")
        leftover = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(engine_port) in " ".join(p.info["cmdline"] or [])
        ]
        assert not leftover, leftover
    finally:
        if gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=60)


class Proxy:
    """A TCP forwarder on a port of its own: closing it is a real network fault between gateway and engine."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # open keep-alive connections are cut too
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()


@pytest.mark.vllm
async def test_url_engine_leaves_the_rotation_while_cut_off_and_comes_back(vllm_server):
    proxy, dead = Proxy(vllm_server.port), f"http://127.0.0.1:{free_port()}/v1"
    await proxy.open()
    live = f"http://127.0.0.1:{proxy.port}/v1"
    config = ServeConfig(engine_url=[dead, live], health_interval_s=0.2, engine_retries=0)
    app = build_app(config, [dead, live], vllm_server.model_name)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:

            async def state() -> tuple[int, dict]:
                response = await client.get("/health")
                return response.status_code, response.json()

            async def until(expected: int) -> dict:
                for _ in range(100):
                    status, body = await state()
                    if status == expected:
                        return body
                    await asyncio.sleep(0.1)
                raise AssertionError(f"/health never answered {expected}: {body}")

            body = await until(200)
            await asyncio.sleep(0.5)  # enough probes for the dead URL to leave the rotation
            _, body = await state()
            assert body["status"] == "degraded" and body["engines"] == {dead: "down", live: "ok"}
            # with the dead engine out of rotation and no retries, every window goes to the live one
            items = [ITEM | {"response": f"The Sella river ({i})."} for i in range(8)]
            results = (await client.post("/v1/judge", json={"items": items})).json()["results"]
            assert all(r["reward"] is not None for r in results), results

            await proxy.close()  # the live engine is cut off: nothing can judge
            body = await until(503)
            assert body["engines"] == {dead: "down", live: "down"}
            await proxy.open()  # back: into the rotation again, judging resumes
            await until(200)
            results = (await client.post("/v1/judge", json={"items": items})).json()["results"]
            assert all(r["reward"] is not None for r in results), results
    await proxy.close()
