"""The one retry helper: Retry-After parsing and the backoff schedule (its loop runs for real in the LLM
client's tests against vLLM and in the adapters' tests against the gateway)."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from rubric_pipeline.core.http import RetryPolicy, retry_after_s, send_with_retries


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "3"})) == 3.0
    assert retry_after_s(httpx.Response(503)) == 0.0
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "soon"})) == 0.0
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < retry_after_s(httpx.Response(503, headers={"Retry-After": when})) <= 20


def test_delay_doubles_is_capped_and_honours_retry_after():
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=4.0, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(1, retry_after=3.0) == 3.0 and policy.delay(1, retry_after=99) == 4.0


async def test_final_statuses_are_not_retried_and_retryable_ones_are():
    answers = iter([httpx.Response(503), httpx.Response(200), httpx.Response(404), httpx.Response(503)])
    calls = []

    async def send(attempt: int) -> httpx.Response:
        calls.append(attempt)
        return next(answers)

    policy = RetryPolicy(retries=3, backoff_s=0.0, jitter=False)
    outcome = await send_with_retries(send, policy)
    assert outcome.response.status_code == 200 and outcome.attempts == 2 and calls == [1, 2]
    outcome = await send_with_retries(send, policy)
    assert outcome.response.status_code == 404 and outcome.attempts == 1


async def test_read_timeouts_are_final_when_the_policy_says_so():
    async def send(attempt: int) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    outcome = await send_with_retries(send, RetryPolicy(retries=3, retry_read_timeout=False))
    assert outcome.attempts == 1 and isinstance(outcome.error, httpx.ReadTimeout)
    with pytest.raises(ZeroDivisionError):  # anything but a transport error propagates at once
        await send_with_retries(lambda attempt: 1 / 0, RetryPolicy())
