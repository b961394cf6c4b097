"""The same security layer on the REST bridge: TLS on its listener, `Authorization` and
`X-Api-Key` headers, the same principals, per-route callers, filtered listings and audit lines,
and every row of the hostile-input table refused over HTTP too."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import trustme
from auth_support import BATCH_KEY, api_key, bearer
from hostile_cases import CASES, Case
from multidict import CIMultiDict, CIMultiDictProxy
from security_support import Issuer

from sagewire.observability import calls
from support import Sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

Server = tuple[Sagewire, trustme.CA]
HTTP_OF = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429}


class Rest:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session, self.base = session, f"https://localhost:{port}"

    async def call(
        self, method: str, path: str, metadata: list[tuple[str, str]], body: Any = None
    ) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
        headers = CIMultiDict(metadata)  # duplicates kept: some cases send a header twice
        async with self.session.request(
            method, self.base + path, headers=headers, json=body
        ) as response:
            text = await response.text()
            try:
                doc = json.loads(text)
            except ValueError:
                doc = {"text": text}
            return response.status, doc, response.headers


@pytest_asyncio.fixture(loop_scope="session")
async def rest(auth_sagewire: Server) -> AsyncIterator[Rest]:
    sw, ca = auth_sagewire
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Rest(session, sw.server.rest_port)


def _reason(doc: dict[str, Any]) -> str:
    for detail in doc.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail.get("reason", ""))
    return ""


async def test_rest_listener_serves_tls_with_the_same_principals(
    rest: Rest, issuer: Issuer
) -> None:
    invoke = "/v1/models/echo:invoke"
    status, doc, _ = await rest.call(
        "POST", invoke, bearer(issuer.token("svc-fraud")), {"json": {"a": 1}}
    )
    assert (status, doc["json"]) == (200, {"a": 1})
    status, doc, _ = await rest.call("POST", invoke, api_key(BATCH_KEY), {"json": {"a": 1}})
    assert status == 200
    status, doc, _ = await rest.call("GET", "/v1/models", bearer(issuer.token("svc-fraud")))
    assert [m["name"] for m in doc["models"]] == ["echo", "echo-open"]
    status, doc, _ = await rest.call("GET", "/healthz", [])
    assert status == 200


async def test_rest_refusals_carry_status_reason_and_challenge(
    rest: Rest, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sagewire.audit")
    status, doc, headers = await rest.call("GET", "/v1/models", [])
    assert (status, _reason(doc)) == (401, "CREDENTIALS_MISSING")
    assert headers["WWW-Authenticate"] == 'Bearer realm="sagewire"'
    token = issuer.token("svc-unlisted")
    status, doc, _ = await rest.call(
        "POST", "/v1/models/hidden:invoke", bearer(token), {"json": {}}
    )
    assert (status, _reason(doc)) == (403, "MODEL_NOT_PERMITTED")
    # Unknown paths are not revealed to strangers.
    status, doc, _ = await rest.call("GET", "/v1/nowhere", [])
    assert status == 401
    # OpenAPI is reflection: restricted the same way.
    ok, _, _ = await rest.call("GET", "/v1/openapi.json", bearer(issuer.token("svc-fraud")))
    denied, doc, _ = await rest.call("GET", "/v1/openapi.json", bearer(token))
    assert (ok, denied, _reason(doc)) == (200, 403, "REFLECTION_DENIED")
    assert any(
        "principal='jwt:sub:svc-unlisted'" in r.getMessage() and "'hidden'" in r.getMessage()
        for r in caplog.records
    )
    assert not any(token in r.getMessage() for r in caplog.records)


REST_CASES = [c for c in CASES if c.reason is not None]


@pytest.mark.parametrize("case", REST_CASES, ids=[c.name for c in REST_CASES])
async def test_hostile_credentials_are_refused_over_rest(
    rest: Rest, issuer: Issuer, case: Case
) -> None:
    status, doc, _ = await rest.call(
        "POST", "/v1/models/echo:invoke", case.metadata(issuer), {"json": {"a": 1}}
    )
    assert status == HTTP_OF[case.code.name], doc
    assert _reason(doc) == case.reason


async def test_huge_header_is_refused_over_rest(rest: Rest) -> None:
    status, doc, _ = await rest.call("POST", "/v1/models/echo:invoke", bearer("x" * 20_000), {})
    assert status in (400, 431), doc


async def test_the_access_record_names_the_caller(
    rest: Rest, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagewire.access")
    body = {"json": {"a": 1}}
    token = issuer.token("svc-fraud")
    answers = [
        await rest.call(
            "POST", "/v1/models/echo:invoke", [("Authorization", f"Bearer {token}")], body
        ),
        await rest.call("POST", "/v1/models/echo:invoke", [("X-Api-Key", BATCH_KEY)], body),
        await rest.call(
            "POST", "/v1/models/echo-strict/invocations", [("X-Api-Key", BATCH_KEY)], {}
        ),
        await rest.call(
            "POST", "/v1/models/echo:invoke", [("X-Api-Key", "swk_nope-0123456789abcdef")], body
        ),
    ]
    assert [status for status, _, _ in answers] == [200, 200, 403, 401]
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    records = [
        r.access for r in caplog.records if r.name == "sagewire.access" and hasattr(r, "access")
    ]
    seen = [(r["http_status"], r.get("principal"), r["model"]) for r in records]
    assert seen == [
        (200, "jwt:sub:svc-fraud", "echo"),
        (200, "key:batch", "echo"),
        (403, "key:batch", "echo-strict"),
        (401, None, ""),  # refused before any handler, recorded all the same: no caller
    ]
    assert BATCH_KEY not in caplog.text
    assert token not in caplog.text


async def test_a_requested_path_cannot_forge_an_audit_line(
    rest: Rest, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit line of a refused request names its path, which the caller chose: a
    percent-encoded line break in it stays escaped, so no forged line of the caller's own
    starts there (the text log format writes the message as it is)."""
    caplog.set_level(logging.WARNING, logger="sagewire.audit")
    path = "/v1/models/x%0D%0A2026-11-30%2023:59:59,000%20INFO%20sagewire.access%20FORGED:invoke"
    status, _, _ = await rest.call("POST", path, [])
    assert status == 401
    lines = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert lines == [
        "denied principal='-' method=POST /v1/models/x\\r\\n2026-11-30 23:59:59,000 INFO "
        "sagewire.access FORGED:invoke model='' status=UNAUTHENTICATED reason=CREDENTIALS_MISSING"
    ]
