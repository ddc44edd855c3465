"""An ASGI app served by uvicorn on a background thread, for tests, benchmarks and notebooks."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class BackgroundServer:
    """``with BackgroundServer(app) as server:`` serves ``app`` at ``server.url`` until the block ends.

    The listening socket is bound here (port 0: the OS picks a free one), so the port cannot be taken by
    someone else between choosing it and serving on it; entering waits until uvicorn has started.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "rv-server",
        startup_timeout_s: float = 30.0,
    ):
        self.host, self.name, self.startup_timeout_s = host, name, startup_timeout_s
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.port: int = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread: threading.Thread | None = None
        self.exit_code: int | str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                why = f" (uvicorn exited with {self.exit_code})" if self.exit_code is not None else ""
                raise RuntimeError(f"{self.name} did not start on {self.url}{why}")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except SystemExit as exc:  # uvicorn exits when the app's startup fails; the thread just ends
            self.exit_code = exc.code

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.socket.close()
