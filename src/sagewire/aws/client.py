"""What every AWS client of sagewire shares: its botocore configuration and lifecycle.

One client per service and process, entered once at start-up: connection pools are reused and
no call pays for client creation. Every client resends only failed calls that prove AWS did not
act on them (sagewire.aws.retries).
"""

from __future__ import annotations

import platform
from contextlib import AsyncExitStack
from importlib import metadata
from types import TracebackType
from typing import Any, Self

import aioboto3
import botocore
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.retries.quota import RetryQuota

from sagewire.aws.error_table import Service
from sagewire.aws.instrumented import InstrumentedClient
from sagewire.aws.retries import use_resend_rule
from sagewire.config.settings import AwsSettings


def _user_agent() -> str:
    try:
        version = metadata.version("sagewire")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"sagewire/{version} botocore/{botocore.__version__} Python/{platform.python_version()}"


# A fixed User-Agent: botocore otherwise rebuilds it twice per request (listing the SDK features
# each call used), about a fifth of an InvokeEndpoint's client CPU (docs/benchmarks.md). It also
# names sagewire in CloudTrail.
USER_AGENT = _user_agent()


def client_config(settings: AwsSettings) -> Config:
    return Config(
        region_name=settings.region,
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        # total_max_attempts counts the first try; botocore's max_attempts counts only retries.
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        tcp_keepalive=True,
        user_agent=USER_AGENT,
    )


class SharedClient:
    """An aioboto3 client for one service; `self._client` is live inside `async with`."""

    def __init__(self, service: str, endpoint_url: str | None, settings: AwsSettings) -> None:
        self._service = service
        self._endpoint_url = endpoint_url
        self._settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None
        # The botocore session (credential chain) of this client; the retry quota it draws
        # from (None: its own).
        self._session = AioSession()
        self._budget: RetryQuota | None = None

    async def __aenter__(self) -> Self:
        client = await self._stack.enter_async_context(
            aioboto3.Session(botocore_session=self._session).client(
                self._service,
                endpoint_url=self._endpoint_url,
                config=client_config(self._settings),
            )
        )
        # Before the wrapper: it reads the retry quota of the handler installed here.
        service = Service.S3 if self._service == "s3" else Service.RUNTIME
        use_resend_rule(client, service, self._settings.max_attempts, self._budget)
        # Every API call gets its CLIENT span and upstream metrics (sagewire.aws.instrumented).
        self._client = InstrumentedClient(client, self._service)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
