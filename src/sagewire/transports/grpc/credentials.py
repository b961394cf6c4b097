"""A gRPC call's credentials for the security layer: the `authorization` and `x-api-key`
metadata values (every one received, so duplicates are seen) and, on a TLS connection with a
verified client certificate, its URI and DNS SANs as gRPC's auth context reports them (in
certificate order; gRPC verified the chain against `client_ca_file` during the handshake)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from sagewire.core.errors import SagewireError
from sagewire.security.guard import CallScope, Security
from sagewire.security.principal import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    Credentials,
    PeerIdentity,
)
from sagewire.transports.grpc.status import to_grpc_status

type Ctx = grpc.aio.ServicerContext[Any, Any]


async def abort_with(context: Ctx, error: SagewireError) -> None:
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _texts(values: Iterable[bytes] | None) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in values or ())


def peer_identity(context: Ctx) -> PeerIdentity | None:
    auth = context.auth_context()
    if not auth.get("x509_subject"):  # plaintext, or TLS without a client certificate
        return None
    return PeerIdentity(uris=_texts(auth.get("peer_uri")), dns_names=_texts(auth.get("peer_dns")))


def grpc_credentials(context: Ctx, method: str, request: Any, mtls: bool) -> Credentials:
    authorization: list[str] = []
    api_key: list[str] = []
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_HEADER:
            authorization.append(str(value))
        elif key == API_KEY_HEADER:
            api_key.append(str(value))
    model = getattr(request, "model", "")
    return Credentials(
        authorization=tuple(authorization),
        api_key=tuple(api_key),
        peer=peer_identity(context) if mtls and not authorization and not api_key else None,
        method=method,
        model=model if isinstance(model, str) else "",
    )


async def enter_call(
    security: Security, method: str, request: Any, context: Ctx
) -> CallScope | None:
    """The edge's security hook, for a server with authentication on (`security.enabled`, which
    the edge checks): authenticate the call to `method` (`/package.Service/Method`) and take
    its caller quota."""
    scope: CallScope | None = await security.enter(
        grpc_credentials(context, method, request, security.mtls)
    )
    return scope


def reflection_check(security: Security) -> Callable[[Ctx], Awaitable[None]]:
    """Reflection's gate once auth is on: an authenticated caller in auth.reflection_callers."""

    async def check(context: Ctx) -> None:
        method = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        try:
            await security.check_reflection(grpc_credentials(context, method, None, security.mtls))
        except SagewireError as error:
            await abort_with(context, error)

    return check
