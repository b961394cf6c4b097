"""Which failed AWS calls the client sends again: only those that prove AWS did not act.

botocore's standard retry mode stays the one retry layer (its attempts, backoff and retry quota,
aws.max_attempts), but *what* it retries is sagewire's rule, not botocore's: botocore also resends
after a read timeout or a connection lost mid-request, which runs a model again (a real-time
call three times, an async job twice) and keeps the caller waiting several read timeouts. Here a
call is resent only when
- the connection was never made (refused, DNS, connect timeout, TLS): nothing was sent, or
- AWS answered with an error code whose row in sagewire.aws.error_table says `resend`
  (throttling, ServiceUnavailable; S3's SlowDown, 503, RequestTimeout, InternalError).
  ModelNotReadyException is not resent here: sagewire.core.cold_start waits it out within the
  caller's deadline, the one layer that sends it again.
Read timeouts, lost connections, 5xx without such a code and model errors are reported as they
are. The same rule holds for every client (SageMaker Runtime, S3, the control plane).

How: botocore registers its retry handler on the client's `needs-retry` event under the unique id
`retry-config-<service>` in every mode (standard, adaptive, legacy); `use_resend_rule` replaces it
with aiobotocore's standard handler built with `ResendChecker` and a fresh standard retry quota.
An adaptive client keeps its rate limiter (a separate handler).

One retry budget (issue 14): when the caller is itself retrying (a gRPC client's retry policy
sends `grpc-previous-rpc-attempts` > 0 on every attempt after the first), its policy already
spends attempts, and resending upstream too would multiply them (3 caller attempts × 3 botocore
attempts = 9 model calls). The transport marks such a call with `mark_caller_retrying()`; every
resend checker (`ResendChecker` here, and any other client path that resends) asks
`caller_is_retrying()` and then gives the call its one upstream attempt.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from aiobotocore.retries.standard import (
    AioRetryHandler,
    AioRetryPolicy,
)
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import (
    ExponentialBackoff,
    MaxAttemptsChecker,
    RetryContext,
    RetryEventAdapter,
    RetryHandler,
    RetryPolicy,
    RetryQuotaChecker,
)

from sagewire.aws.error_table import Cut, Service, resendable
from sagewire.aws.errors import connection_cut

# Set for the rest of one call (each gRPC and REST call runs in its own asyncio task, whose
# context copies are private to it and to the tasks it starts).
_caller_retrying: ContextVar[bool] = ContextVar("sagewire_caller_retrying", default=False)


def mark_caller_retrying() -> None:
    """The current call is a caller's retry: its AWS calls get one attempt each."""
    _caller_retrying.set(True)


def caller_is_retrying() -> bool:
    """Whether the current call is a caller's retry (`mark_caller_retrying`); every upstream
    resend decision consults it, so sagewire never multiplies a retrying caller's attempts."""
    return _caller_retrying.get()


class ResendChecker:
    """botocore's retry checker interface (`is_retryable(context)`) with sagewire's rule:
    never for a caller's own retry, else within max_attempts and only when AWS did not act."""

    def __init__(self, service: Service, max_attempts: int) -> None:
        self._service = service
        self._attempts = MaxAttemptsChecker(max_attempts)

    def is_retryable(self, context: RetryContext) -> bool:
        return (
            not _caller_retrying.get()
            and self._attempts.is_retryable(context)
            and self.proves_not_acted(context)
        )

    def proves_not_acted(self, context: RetryContext) -> bool:
        if context.caught_exception is not None:
            return connection_cut(context.caught_exception) is Cut.UNREACHABLE
        code = context.get_error_code()
        return bool(code) and resendable(self._service, str(code))


def resend_handler(
    service: Service, max_attempts: int, quota: RetryQuota
) -> tuple[RetryHandler, RetryQuotaChecker]:
    """botocore's standard retry handler with `ResendChecker`, for a caller that runs its own
    send loop (the lean SageMaker Runtime path, sagewire.aws.lean): call `needs_retry(...)` as
    botocore's endpoint does after each failed attempt, and the checker's
    `release_retry_quota(context, http_response)` after a 2xx answer."""
    checker = RetryQuotaChecker(quota)
    handler = RetryHandler(
        retry_policy=RetryPolicy(
            retry_checker=ResendChecker(service, max_attempts),
            retry_backoff=ExponentialBackoff(),
        ),
        retry_event_adapter=RetryEventAdapter(),
        retry_quota=checker,
    )
    return handler, checker


def use_resend_rule(
    client: Any, service: Service, max_attempts: int, budget: RetryQuota | None = None
) -> None:
    """Make `client` (an aiobotocore client) resend only what `ResendChecker` allows, within
    `budget` (a fresh standard quota when None; pass the lean path's to share one budget)."""
    event_name = client.meta.service_model.service_id.hyphenize()
    client.meta.events.unregister(
        f"needs-retry.{event_name}", unique_id=f"retry-config-{event_name}"
    )
    quota = RetryQuotaChecker(budget if budget is not None else RetryQuota())
    client.meta.events.register(f"after-call.{event_name}", quota.release_retry_quota)
    handler = AioRetryHandler(
        retry_policy=AioRetryPolicy(
            retry_checker=ResendChecker(service, max_attempts),
            retry_backoff=ExponentialBackoff(),
        ),
        retry_event_adapter=RetryEventAdapter(),
        retry_quota=quota,
    )
    client.meta.events.register(
        f"needs-retry.{event_name}",
        handler.needs_retry,
        unique_id=f"retry-config-{event_name}",
    )
