"""The work bound: windows, not requests; refuse at once or wait for room."""

from __future__ import annotations

import asyncio

import pytest

from verifier.serve.admission import QueueFull, WorkQueue, windows_of


def test_windows_of_counts_engine_requests():
    assert [windows_of(n, 10) for n in (0, 1, 10, 11, 25)] == [1, 1, 1, 2, 3]


async def test_refuses_past_the_bound_and_recovers():
    queue = WorkQueue(4)
    async with queue.admit(3), queue.admit(1):
        assert queue.used == 4
        with pytest.raises(QueueFull, match="4 windows queued; the gateway admits 4"):
            async with queue.admit(1):
                pass
    assert queue.used == 0
    async with queue.admit(100):  # larger than the bound: admitted alone
        assert queue.used == 4


async def test_waiters_get_room_in_turn_or_give_up():
    queue = WorkQueue(1)
    order = []

    async def job(name: str, hold_s: float) -> None:
        async with queue.admit(1, wait_s=5):
            order.append(name)
            await asyncio.sleep(hold_s)

    await asyncio.gather(*(job(f"j{i}", 0.01) for i in range(20)))
    assert sorted(order) == sorted(f"j{i}" for i in range(20)) and queue.used == 0
    async with queue.admit(1):
        with pytest.raises(QueueFull, match=r"within 0\.05s"):
            async with queue.admit(1, wait_s=0.05):
                pass
