"""The lean path's HTTP: InvokeEndpoint on sagewire.aws.lean_http1's keep-alive pool, response
streams (and everything, behind a proxy) on one pooled aiohttp session; failures raised as
aiobotocore raises them.

Why not aiobotocore's AIOHTTPSession itself (the first version did use it): per call it re-reads
the proxy environment, rebuilds every header into a new CIMultiDict and every response header
into a new dict, about a third of the lean call's client CPU in `python -m bench.profile`. Here
the proxy is resolved once at start-up (botocore's ProxyConfiguration over HTTP(S)_PROXY and
NO_PROXY), and the rest is aiobotocore's, kept in step with it: the connector (pool limit
aws.max_pool_connections, keep-alive 12 s, TLS context from botocore with its CA bundle), the
timeouts (aiohttp sock_connect / sock_read = aws.connect_timeout_s / aws.read_timeout_s, as
aiobotocore maps botocore's connect and read timeouts), `Accept-Encoding: identity`, no
automatic Content-Type, no decompression, and the exception translation of
`AIOHTTPSession.send` (aiobotocore/httpsession.py), so sagewire.aws.errors and the resend rule
see the same botocore exceptions on both clients.

The one change to aiohttp's behaviour is in how, not when: its `sock_read` timeout (the read
timeout) cancels and schedules a loop timer on every chunk received and at the start and end
of every response, two timers per call (~5 µs each under uvloop). `_ReadTimeout` keeps the
same deadline as a number moved forward on each chunk, checked by one timer per connection that
re-arms for the moved deadline when it fires early (sagewire.aws.read_deadline, shared with the
InvokeEndpoint pool); silence for the read timeout raises exactly what aiohttp raises
(tests/integration/test_upstream_phases.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiobotocore._constants import DEFAULT_KEEPALIVE_TIMEOUT
from aiohttp.client_proto import ResponseHandler
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import ProxyConfiguration, create_urllib3_context, get_cert_path
from yarl import URL

from sagewire.aws.lean_http1 import Http1Pool
from sagewire.aws.read_deadline import ReadDeadline


def _ssl_context() -> Any:
    """aiobotocore's TLS context without a proxy: botocore's defaults and CA bundle
    (REQUESTS_CA_BUNDLE as botocore's EndpointCreator reads it, else botocore's bundle)."""
    context = create_urllib3_context()
    ca_certs = get_cert_path(os.environ.get("REQUESTS_CA_BUNDLE") or True)
    if ca_certs:
        context.load_verify_locations(ca_certs, None, None)
    return context


class _ReadTimeout(ResponseHandler):
    """aiohttp's ResponseHandler with its read timeout on one timer per connection
    (sagewire.aws.read_deadline). aiohttp calls `_reschedule_timeout` when a response starts and
    on each chunk, `_drop_timeout` when reading stops (end, pause, failure, connection lost)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read = ReadDeadline(self._loop, self._on_read_timeout)

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if timeout:
            self._read.arm(timeout)
        else:
            self._read.stop()

    def _drop_timeout(self) -> None:
        self._read.stop()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._read.close()
        super().connection_lost(exc)


def _with_read_timeout(connector: aiohttp.TCPConnector) -> aiohttp.TCPConnector:
    """The connector making `_ReadTimeout` protocols, when its protocol factory is aiohttp's
    (a private attribute: another aiohttp keeps its own, which behaves the same, slower)."""
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(  # type: ignore[assignment]
            _ReadTimeout, *factory.args, **factory.keywords
        )
    return connector


class LeanHttp:
    """The pooled session; use as an async context manager, then `post(...)`."""

    def __init__(
        self, endpoint_url: str, max_connections: int, connect_s: float, read_s: float
    ) -> None:
        proxies = ProxyConfiguration()
        self._proxy: str | None = proxies.proxy_url_for(endpoint_url)
        self._proxy_headers = proxies.proxy_headers_for(endpoint_url) if self._proxy else None
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_s, sock_read=read_s)
        self._tls = endpoint_url.startswith("https:")
        self._endpoint_url = endpoint_url
        self._connect_s = connect_s
        self._read_s = read_s
        self._session: aiohttp.ClientSession | None = None
        self._whole: Http1Pool | None = None

    async def __aenter__(self) -> Self:
        tls = _ssl_context() if self._tls else None
        if self._proxy is None:
            self._whole = Http1Pool(
                self._endpoint_url, self._max_connections, self._connect_s, self._read_s, tls
            )
        connector = _with_read_timeout(
            aiohttp.TCPConnector(
                limit=self._max_connections,
                ssl=tls or False,
                keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT,
            )
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            skip_auto_headers={"CONTENT-TYPE"},
            auto_decompress=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._whole is not None:
            self._whole.close()
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool = False
    ) -> Any:
        """Send; returns the answer once its headers are in, its body unread (`await
        answer.read()`; with `stream`, aiohttp's ClientResponse, to read as it comes). Raises
        botocore's exceptions exactly where aiobotocore's AIOHTTPSession.send raises them."""
        assert self._session is not None, "LeanHttp used outside `async with`"
        if self._whole is not None and not stream:
            try:
                return await self._whole.post(url, headers, body)
            except ValueError as e:  # a CR or LF in a header, refused as aiohttp refuses it
                raise HTTPClientError(error=e) from e
        try:
            return await self._session.request(
                "POST",
                URL(url, encoded=True),
                headers=headers,
                data=body,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
            )
        except aiohttp.ClientSSLError as e:
            raise SSLError(endpoint_url=url, error=e) from e
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as e:
            raise ProxyConnectionError(proxy_url=self._proxy, error=e) from e
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.http_exceptions.BadStatusLine,
        ) as e:
            raise ConnectionClosedError(error=e, request=None, endpoint_url=url) from e
        except aiohttp.ServerTimeoutError as e:
            if str(e).lower().startswith("connect"):
                raise ConnectTimeoutError(endpoint_url=url, error=e) from e
            raise ReadTimeoutError(endpoint_url=url, error=e) from e
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError, socket.gaierror) as e:
            raise EndpointConnectionError(endpoint_url=url, error=e) from e
        except TimeoutError as e:
            raise ReadTimeoutError(endpoint_url=url, error=e) from e
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise HTTPClientError(error=e) from e
