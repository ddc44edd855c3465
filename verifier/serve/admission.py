"""Backpressure by work, not by requests: the gateway admits rubric windows up to a bound.

RL frameworks send one sample per request with thousands in flight (verl's reward workers, OpenRLHF's
rollout executors); a bound on requests refuses them while the engine has room, and one 256-item request
weighs the same as one single-sample request. :class:`WorkQueue` counts what an engine will actually do,
the rubric windows, and either refuses at once (``/v1/judge``: 503 + Retry-After, which the adapters
honour) or waits for room (``/get_reward``: OpenRLHF ignores Retry-After and ends the run on errors).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueFull(RuntimeError):
    """More rubric windows queued than the gateway admits (HTTP 503 + Retry-After)."""


def windows_of(n_rubrics: int, window: int) -> int:
    """Engine requests one item costs; a degenerate or empty item still costs one unit of bookkeeping."""
    return max(1, math.ceil(n_rubrics / max(1, window)))


class WorkQueue:
    """A counting bound on windows admitted (queued or being judged) across all requests."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the window bound must be at least 1, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self._room: asyncio.Condition | None = None

    def _cost(self, windows: int) -> int:
        # A request larger than the whole bound is admitted alone rather than refused forever.
        return min(windows, self.capacity)

    def _fits(self, cost: int) -> bool:
        return self.used + cost <= self.capacity

    @asynccontextmanager
    async def admit(self, windows: int, *, wait_s: float | None = None) -> AsyncIterator[None]:
        """Hold ``windows`` of the bound for the body of the ``async with``. ``wait_s=None`` refuses at once
        when full (:class:`QueueFull`); a number waits up to that many seconds for room, then refuses."""
        cost = self._cost(windows)
        if not self._fits(cost):
            if wait_s is None:
                raise QueueFull(f"{self.used} windows queued; the gateway admits {self.capacity}")
            if self._room is None:
                self._room = asyncio.Condition()
            try:
                async with self._room:
                    await asyncio.wait_for(self._room.wait_for(lambda: self._fits(cost)), wait_s)
            except TimeoutError:
                raise QueueFull(
                    f"no room for {cost} windows within {wait_s:g}s ({self.used} of {self.capacity} queued)"
                ) from None
        self.used += cost
        try:
            yield
        finally:
            self.used -= cost
            if self._room is not None:
                async with self._room:
                    self._room.notify_all()
