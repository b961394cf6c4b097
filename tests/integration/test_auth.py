"""Caller identity and per-route authorisation over TLS: JWT bearer tokens verified against a
JWKS the test serves over HTTP, static API keys, default-deny routes, filtered ListModels,
restricted reflection, open health, and the audit log."""

from __future__ import annotations

import logging

import grpc
import pytest
import trustme
from auth_support import BATCH_KEY, READER_KEY, api_key, bearer, invoke, invoke_failure
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security_support import Issuer, tls_channel

from sagewire.emulator.server import RunningEmulator
from sagewire.observability import calls
from sagewire.v1 import model_service_pb2, model_service_pb2_grpc
from support import Sagewire, failure, settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

Server = tuple[Sagewire, trustme.CA]


async def _models(channel: grpc.aio.Channel, metadata: list[tuple[str, str]]) -> list[str]:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    reply = await stub.ListModels(model_service_pb2.ListModelsRequest(), metadata=metadata)
    return [m.name for m in reply.models]


async def test_each_kind_of_caller_reaches_what_its_route_allows(
    auth_sagewire: Server, issuer: Issuer
) -> None:
    sw, ca = auth_sagewire
    async with tls_channel(sw.server.port, ca) as channel:
        assert await invoke(channel, bearer(issuer.token("svc-fraud"))) == b'{"a":1}'
        lower = [("authorization", "bearer " + issuer.token("svc-fraud"))]
        assert await invoke(channel, lower) == b'{"a":1}'
        grouped = issuer.token("svc-x", claims={"groups": ["ml-readers"]})
        assert await invoke(channel, bearer(grouped)) == b'{"a":1}'
        assert await invoke(channel, api_key(BATCH_KEY)) == b'{"a":1}'
        # `reader` is in ml-readers through [auth.groups].
        assert await invoke(channel, api_key(READER_KEY)) == b'{"a":1}'
        # "*" admits any authenticated caller.
        assert await invoke(channel, bearer(issuer.token("anyone")), model="echo-open")


async def test_known_callers_outside_a_route_get_permission_denied(
    auth_sagewire: Server, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    sw, ca = auth_sagewire
    caplog.set_level(logging.INFO, "sagewire.audit")
    token = issuer.token("svc-unlisted")
    async with tls_channel(sw.server.port, ca) as channel:
        for model in ("echo", "echo-strict", "hidden"):
            denied = await invoke_failure(channel, bearer(token), model=model)
            assert denied.code == grpc.StatusCode.PERMISSION_DENIED
            assert denied.reason == "MODEL_NOT_PERMITTED"
            # Helpful, but no policy: who may call it is not revealed.
            assert "jwt:sub:svc-unlisted may not call model" in denied.message
            assert "svc-fraud" not in denied.message
            assert "group" not in denied.message
        key_denied = await invoke_failure(channel, api_key(BATCH_KEY), model="echo-strict")
        assert key_denied.code == grpc.StatusCode.PERMISSION_DENIED
    lines = [r.getMessage() for r in caplog.records if r.name == "sagewire.audit"]
    assert (
        "denied principal='jwt:sub:svc-unlisted' method=/sagewire.v1.InferenceService/Invoke "
        "model='hidden' status=PERMISSION_DENIED reason=MODEL_NOT_PERMITTED"
    ) in lines
    assert any("principal='key:batch'" in line and "'echo-strict'" in line for line in lines)
    assert not any(token in r.getMessage() or BATCH_KEY in r.getMessage() for r in caplog.records)


async def test_list_models_shows_only_what_the_caller_may_call(
    auth_sagewire: Server, issuer: Issuer
) -> None:
    sw, ca = auth_sagewire
    async with tls_channel(sw.server.port, ca) as channel:
        assert await _models(channel, bearer(issuer.token("svc-fraud"))) == ["echo", "echo-open"]
        other = await _models(channel, bearer(issuer.token("svc-other")))
        assert other == ["echo-open", "echo-strict"]
        assert await _models(channel, bearer(issuer.token("nobody"))) == ["echo-open"]
        # The unknown-model hint lists the caller's models only.
        unknown = await invoke_failure(channel, bearer(issuer.token("nobody")), model="nope")
        assert unknown.code == grpc.StatusCode.NOT_FOUND
        assert "known models: echo-open" in unknown.message
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _models(channel, [])
        assert failure(caught.value).reason == "CREDENTIALS_MISSING"
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetModel(
                model_service_pb2.GetModelRequest(name="hidden"),
                metadata=bearer(issuer.token("svc-fraud")),
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_stays_open_and_reflection_is_restricted(
    auth_sagewire: Server, issuer: Issuer
) -> None:
    sw, ca = auth_sagewire
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def reflect(metadata: list[tuple[str, str]]) -> list[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
        names = []
        async for reply in call:
            names += [s.name for s in reply.list_services_response.service]
        return names

    async with tls_channel(sw.server.port, ca) as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert "sagewire.v1.InferenceService" in await reflect(bearer(issuer.token("svc-fraud")))
        for metadata, code, reason in [
            (
                bearer(issuer.token("svc-other")),
                grpc.StatusCode.PERMISSION_DENIED,
                "REFLECTION_DENIED",
            ),
            ([], grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await reflect(metadata)
            assert (caught.value.code(), failure(caught.value).reason) == (code, reason)


async def test_jwks_keys_rotate_mid_run(auth_sagewire: Server, issuer: Issuer) -> None:
    sw, ca = auth_sagewire
    old = issuer.token("svc-fraud", kid="k1")
    async with tls_channel(sw.server.port, ca) as channel:
        assert await invoke(channel, bearer(old))
        fetched = issuer.requests
        # Warm cache: the same and other k1 tokens cost no JWKS request.
        assert await invoke(channel, bearer(old))
        assert await invoke(channel, bearer(issuer.token("svc-fraud", kid="k1", ttl_s=60)))
        assert issuer.requests == fetched
        # The issuer adds k2 and retires k1; a k2 token (unknown kid) refreshes the JWKS.
        issuer.add_key("k2", "EC")
        issuer.published.remove("k1")
        assert await invoke(channel, bearer(issuer.token("svc-fraud", kid="k2")))
        assert issuer.requests == fetched + 1
        # k1 tokens, even one verified a moment ago, are now refused.
        rejected = await invoke_failure(channel, bearer(old))
        assert (rejected.code, rejected.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_KEY_UNKNOWN",
        )
        issuer.published.append("k1")  # leave the module's issuer as it was


async def test_unreachable_jwks_is_unavailable_not_unauthenticated(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    jwt_settings = issuer.jwt_settings(jwks_url="http://127.0.0.1:9/jwks.json", jwks_timeout_s=2)
    settings = settings_for(emulator, auth={"jwt": jwt_settings})
    async with start_sagewire(emulator, settings) as sw:
        down = await invoke_failure(sw.channel, bearer(issuer.token("svc-fraud")))
    assert (down.code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "JWKS_UNAVAILABLE")


def _access_records(caplog: pytest.LogCaptureFixture, method: str) -> list[dict[str, object]]:
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    return [
        r.access  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "sagewire.access" and getattr(r, "access", {}).get("method") == method
    ]


async def test_the_access_record_names_the_caller(
    auth_sagewire: Server, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    sw, ca = auth_sagewire
    caplog.set_level(logging.INFO, logger="sagewire.access")
    async with tls_channel(sw.server.port, ca) as channel:
        await invoke(channel, bearer(issuer.token("svc-fraud")))
        await invoke(channel, api_key(BATCH_KEY))
        denied = await invoke_failure(channel, api_key(BATCH_KEY), model="echo-strict")
        unknown = await invoke_failure(channel, api_key("swk_not-a-key-0123456789abcdef"))
    assert (denied.code, unknown.code) == (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    )
    records = _access_records(caplog, "sagewire.v1.InferenceService/Invoke")
    seen = [(r["status"], r.get("principal"), r["model"]) for r in records]
    assert seen == [
        ("OK", "jwt:sub:svc-fraud", "echo"),
        ("OK", "key:batch", "echo"),
        ("PERMISSION_DENIED", "key:batch", "echo-strict"),
        ("UNAUTHENTICATED", None, ""),  # nobody was authenticated: no principal to name
    ]
    assert BATCH_KEY not in caplog.text
