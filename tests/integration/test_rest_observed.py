"""The bridge's own routes (raw passthrough, UploadAsync, Converse over WebSocket) are observed
like transcoded ones: an `http_server_request_duration_seconds` series per route template, an
access record naming the RPC, status and reason. Scraped over HTTP from a running sagewire."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import aiohttp
import grpc
import pytest
from auth_support import API_KEY_LINES, AUTH_ROUTES, BATCH_KEY, bearer
from scrape import Scrape, scrape
from security_support import running_issuer

from sagewire.emulator.server import RunningEmulator
from sagewire.observability import calls
from sagewire.v1 import invoke_pb2
from support import settings_for, start_sagewire

DURATION = "http_server_request_duration_seconds_count"


def requests(found: Scrape, route: str, status: str, method: str = "POST") -> float | None:
    """Requests recorded on `route` (a template) with this status and method."""
    labels = {"http_request_method": method, "http_route": route}
    return found.value(DURATION, **labels, http_response_status_code=status)


async def test_passthrough_upload_and_websocket_routes_are_recorded(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagewire.access")
    async with start_sagewire(emulator, telemetry={"metrics_listen": "127.0.0.1:0"}) as sw:
        base = sw.rest_url
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.post(f"{base}/v1/models/echo/invocations", data=b"{}") as ok:
                assert ok.status == 200
            async with http.post(f"{base}/v1/models/nope/invocations", data=b"{}") as missing:
                assert missing.status == 404
            stream = f"{base}/v1/models/tokens/invocations-response-stream"
            async with http.post(stream, data=b'{"text": "a b"}') as streamed:
                assert streamed.status == 200
                await streamed.read()
            async with http.post(f"{base}/v1/models/echo:uploadAsync", data=b"{}") as upload:
                assert upload.status == 400  # echo is not an async route
            async with http.ws_connect(f"{base}/v1/models/nope:converse") as ws:
                await ws.send_json({"open": {}})
                await ws.receive()  # the error frame
        found = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")

    assert requests(found, "/v1/models/{model}/invocations", "200") == 1
    assert requests(found, "/v1/models/{model}/invocations", "404") == 1
    assert requests(found, "/v1/models/{model}/invocations-response-stream", "200") == 1
    assert requests(found, "/v1/models/{model}:uploadAsync", "400") == 1
    assert requests(found, "/v1/models/{model}:converse", "101", "GET") == 1
    assert "nope" not in {v for _, labels in found.samples for k, v in labels if k == "http_route"}
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    lines = [r.getMessage() for r in caplog.records if r.name == "sagewire.access"]
    assert any("InferenceService/Invoke model=- -> NOT_FOUND (UNKNOWN_MODEL)" in x for x in lines)
    assert any(
        "InferenceService/UploadAsync model=echo -> FAILED_PRECONDITION (WRONG_MODE)" in x
        for x in lines
    )
    assert any("InferenceService/Converse" in x and "(UNKNOWN_MODEL)" in x for x in lines)


async def test_requests_the_security_layer_refuses_are_recorded(
    emulator: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """401 and 403 answered before any route handler runs get their access record and HTTP
    series like every other request (gRPC records its UNAUTHENTICATED calls the same way)."""
    caplog.set_level(logging.INFO, logger="sagewire.access")
    keys = tmp_path / "api-keys"
    keys.write_text(API_KEY_LINES)
    settings = settings_for(
        emulator,
        routes=AUTH_ROUTES,
        auth={"api_keys": {"file": str(keys)}},
        telemetry={"metrics_listen": "127.0.0.1:0"},
    )
    async with start_sagewire(emulator, settings) as sw:
        base = sw.rest_url
        batch, wrong = {"x-api-key": BATCH_KEY}, {"x-api-key": "swk_wrong-0123456789abcdef"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for method, path, headers, status in [
                ("POST", "/v1/models/echo:invoke", {}, 401),
                ("POST", "/v1/models/echo:invoke", wrong, 401),
                ("POST", "/v1/models/echo/invocations", {}, 401),
                ("GET", "/v1/models/echo:converse", {}, 401),
                ("POST", "/v1/no/such/path", {}, 401),
                ("PROPFIND", "/v1/no/such/path", {}, 401),  # a method only llhttp knows
                ("GET", "/v1/openapi.json", batch, 403),  # not a reflection caller
                ("POST", "/v1/models/echo-strict:invoke", batch, 403),  # not a route caller
                ("POST", "/v1/models/echo:invoke", batch, 200),
            ]:
                body = b'{"json": {}}'
                async with http.request(method, base + path, headers=headers, data=body) as r:
                    assert r.status == status, (method, path, await r.text())
        found = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")

    assert requests(found, "/v1/models/{model}:invoke", "401") == 2
    assert requests(found, "/v1/models/{model}/invocations", "401") == 1
    assert requests(found, "/v1/models/{model}:converse", "401", "GET") == 1
    assert requests(found, "", "401") == 1  # no route: never the requested path
    assert requests(found, "", "401", "_OTHER") == 1  # OpenTelemetry's name for any other method
    methods = {v for _, labels in found.samples for k, v in labels if k == "http_request_method"}
    assert methods == {"POST", "GET", "_OTHER"}
    assert requests(found, "/v1/openapi.json", "403", "GET") == 1
    assert requests(found, "/v1/models/{model}:invoke", "403") == 1
    assert requests(found, "/v1/models/{model}:invoke", "200") == 1
    routes = {v for _, labels in found.samples for k, v in labels if k == "http_route"}
    assert not any("echo" in route or "no/such" in route for route in routes)

    calls.write_waiting()  # access records are logged in batches (observability.calls)
    access = [r.access for r in caplog.records if r.name == "sagewire.access"]  # type: ignore[attr-defined]
    refused = [(a["method"], a["status"], a["reason"], a["http_status"]) for a in access]
    invoke = "sagewire.v1.InferenceService/Invoke"
    assert refused.count((invoke, "UNAUTHENTICATED", "CREDENTIALS_MISSING", 401)) == 2
    assert (invoke, "UNAUTHENTICATED", "API_KEY_INVALID", 401) in refused
    converse = "sagewire.v1.InferenceService/Converse"
    assert (converse, "UNAUTHENTICATED", "CREDENTIALS_MISSING", 401) in refused
    assert refused.count(("", "UNAUTHENTICATED", "CREDENTIALS_MISSING", 401)) == 2
    assert ("", "PERMISSION_DENIED", "REFLECTION_DENIED", 403) in refused
    denied = [a for a in access if a["http_status"] == 403 and a["method"] == invoke]
    assert denied
    assert denied[0]["principal"] == "key:batch"
    assert all(BATCH_KEY not in str(a) and "swk_wrong" not in str(a) for a in access)


async def test_the_time_spent_authenticating_is_part_of_the_recorded_time(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A request waits for the JWKS (a signing key sagewire has not seen yet) before it is
    admitted or refused: that wait is part of its recorded duration on both transports, as
    the caller saw it (it was 0 ms on REST refusals, which were timed from the refusal)."""
    caplog.set_level(logging.INFO, logger="sagewire.access")
    async with running_issuer() as issuer:
        issuer.delay_s = 0.5
        settings = settings_for(
            emulator,
            routes={"echo": {"endpoint": "echo", "callers": ["*"]}},
            auth={"jwt": issuer.jwt_settings()},
            telemetry={"metrics_listen": "127.0.0.1:0"},
        )
        async with start_sagewire(emulator, settings) as sw:

            def token(kid: str, published: bool) -> str:
                # A key sagewire has not seen: it fetches the JWKS (0.5 s) to look for it.
                issuer.add_key(kid)
                if not published:
                    issuer.published.remove(kid)
                return issuer.token("svc-a", kid=kid)

            statuses: list[int | str] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                for kid, published in [("rest-ok", True), ("rest-gone", False)]:
                    headers = {"Authorization": f"Bearer {token(kid, published)}"}
                    url = f"{sw.rest_url}/v1/models/echo:invoke"
                    async with http.post(url, headers=headers, json={"json": {}}) as r:
                        statuses.append(r.status)
            request = invoke_pb2.InvokeRequest(model="echo", body=b"{}")
            for kid, published in [("grpc-ok", True), ("grpc-gone", False)]:
                call = sw.inference.Invoke(request, metadata=bearer(token(kid, published)))
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call
                statuses.append((await call.code()).name)
            found = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")

    assert statuses == [200, 401, "OK", "UNAUTHENTICATED"]
    route = {"http_request_method": "POST", "http_route": "/v1/models/{model}:invoke"}
    for status in ("200", "401"):
        labels = {**route, "http_response_status_code": status}
        assert found.value(DURATION, **labels) == 1
        took = found.value("http_server_request_duration_seconds_sum", **labels)
        assert took is not None
        assert took >= 0.45, (status, took)
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    access = [r.access for r in caplog.records if r.name == "sagewire.access"]  # type: ignore[attr-defined]
    invoke = "sagewire.v1.InferenceService/Invoke"
    timed = sorted(
        (a.get("http_status", 0), a["status"], a["duration_ms"])
        for a in access
        if a["method"] == invoke
    )
    assert [(http, status) for http, status, _ in timed] == [
        (0, "OK"),
        (0, "UNAUTHENTICATED"),
        (200, "OK"),
        (401, "UNAUTHENTICATED"),
    ]
    assert all(ms >= 450 for _, _, ms in timed), timed


async def test_requests_no_route_takes_are_recorded_once(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A path no route matches (404) or a method its route does not take (405) gets its access
    record and HTTP series like a refused one, on `http_route=""`; a 404 a route answers
    itself (an unknown model) stays one request on its template."""
    caplog.set_level(logging.INFO, logger="sagewire.access")
    async with start_sagewire(emulator, telemetry={"metrics_listen": "127.0.0.1:0"}) as sw:
        base = sw.rest_url
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for method, path, status in [
                ("POST", "/v1/no/such/path", 404),
                ("PROPFIND", "/v1/no/such/path", 404),  # a method only llhttp knows
                ("GET", "/v1/models/echo:invoke", 405),  # that path takes POST
                ("POST", "/v1/models/nope:invoke", 404),  # the route answers: unknown model
            ]:
                body = b'{"json": {}}'
                async with http.request(method, base + path, data=body) as r:
                    assert r.status == status, (method, path, await r.text())
        found = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")

    assert requests(found, "", "404") == 1
    assert requests(found, "", "404", "_OTHER") == 1
    assert requests(found, "", "405", "GET") == 1
    assert requests(found, "/v1/models/{model}:invoke", "404") == 1
    total = sum(v for (name, _), v in found.samples.items() if name == DURATION)
    assert total == 4
    routes = {v for _, labels in found.samples for k, v in labels if k == "http_route"}
    assert not any("no/such" in route or "echo" in route for route in routes)

    calls.write_waiting()  # access records are logged in batches (observability.calls)
    access = [r.access for r in caplog.records if r.name == "sagewire.access"]  # type: ignore[attr-defined]
    answered = sorted((a["method"], a["status"], a["reason"], a["http_status"]) for a in access)
    assert answered == sorted(
        [
            ("", "NOT_FOUND", "UNKNOWN_ROUTE", 404),
            ("", "NOT_FOUND", "UNKNOWN_ROUTE", 404),
            ("", "UNIMPLEMENTED", "METHOD_NOT_ALLOWED", 405),
            ("sagewire.v1.InferenceService/Invoke", "NOT_FOUND", "UNKNOWN_MODEL", 404),
        ]
    )
