"""Waiting out a cold start: ModelNotReadyException retried with jittered backoff within the
caller's deadline and the route's cap (`[routes.<name>.cold_start]`, docs/resilience.md).

A serverless endpoint scaling from zero, or a model still loading, answers ModelNotReady for a
few seconds; the call that woke it should get the answer, not a retry hint. This loop is the
only layer that sends a call again on ModelNotReady: the AWS client does not resend that code
(sagewire.aws.error_table), so attempts are not multiplied by botocore's own retries, and each
wait is bounded by what the caller's deadline leaves (botocore's backoff does not know it).

Why our own: the retry libraries (tenacity, backoff) would need the same deadline-aware stop
and error classification written as callbacks; the loop itself is a dozen lines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sagewire.config.resilience import ColdStartSettings
from sagewire.core.admission import not_a_latency_sample
from sagewire.core.errors import SagewireError
from sagewire.observability import signals

MODEL_NOT_READY = "MODEL_NOT_READY"
# Time an attempt needs at least after a wait for the answer to arrive before the deadline;
# without it the last attempt would end as DEADLINE_EXCEEDED instead of this advice.
ATTEMPT_ROOM_S = 0.25
# One generator for every call's jitter: seeding a random.Random per call costs ~10 µs of
# os.urandom on a path that almost never waits.
_RNG = random.Random()


def backoff_s(settings: ColdStartSettings, attempt: int, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (0-based): full jitter over an
    exponentially growing ceiling (AWS Architecture Blog, "Exponential Backoff And Jitter"),
    never below `min_backoff_s`."""
    ceiling = min(settings.max_backoff_s, settings.initial_backoff_s * 2.0 ** min(attempt, 30))
    return max(settings.min_backoff_s, rng.uniform(0.0, ceiling))


async def wait_out_cold_start[T](
    attempt: Callable[[], Awaitable[T]],
    settings: ColdStartSettings,
    deadline: float,
    rng: random.Random | None = None,
) -> T:
    """`attempt()` until it does not fail with MODEL_NOT_READY, waiting between attempts.

    `deadline` is the event loop's time by which the call must end. Gives up (re-raising
    MODEL_NOT_READY, UNAVAILABLE with RetryInfo, the message saying how long it waited) when
    the waits would pass `settings.max_wait_s` in total, or leave the attempt after them less
    than ATTEMPT_ROOM_S before the deadline, before a wait of `min_backoff_s` fits (the last
    wait is shortened to fit both).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    while True:
        try:
            return await attempt()
        except SagewireError as error:
            if error.reason != MODEL_NOT_READY or not settings.enabled:
                raise
            now = loop.time()
            waited = now - started
            delay = backoff_s(settings, attempts, rng or _RNG)
            attempts += 1
            # Shorten the last wait to fit the cap and the deadline rather than give up early.
            cap_left = settings.max_wait_s - waited
            deadline_left = deadline - now - ATTEMPT_ROOM_S
            delay = min(delay, cap_left, deadline_left)
            if delay >= settings.min_backoff_s:
                signals.cold_start("retried")
                not_a_latency_sample()  # a wait for the model, not queueing at it
                await asyncio.sleep(delay)
                continue
            if cap_left <= deadline_left:
                why = f"the route's cold_start.max_wait_s ({settings.max_wait_s:g}s) is spent"
            else:
                why = f"the call's deadline is {max(deadline - now, 0.0):.2g}s away"
            signals.cold_start("gave_up")
            raise replace(
                error,
                message=f"{error.message} (sagewire waited {waited:.2g}s over {attempts} "
                f"attempt{'s' if attempts != 1 else ''}; no time for another: {why})",
                metadata={**error.metadata, "cold_start_attempts": str(attempts)},
            ) from None
