"""Every row of the hostile-input table (tests/hostile_cases.py) sent over gRPC to a TLS
sagewire with JWT and API-key authentication: none may be accepted, each is refused with its
specific status and reason, each refusal is an audit line, and no credential reaches the logs."""

from __future__ import annotations

import logging

import pytest
import trustme
from auth_support import invoke_failure
from hostile_cases import CASES, Case
from security_support import Issuer, tls_channel

from support import Sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_credentials_are_refused(
    auth_sagewire: tuple[Sagewire, trustme.CA],
    issuer: Issuer,
    case: Case,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sw, ca = auth_sagewire
    metadata = case.metadata(issuer)
    caplog.set_level(logging.DEBUG)
    async with tls_channel(sw.server.port, ca) as channel:
        refused = await invoke_failure(channel, metadata)
    assert refused.code == case.code, refused.message
    if case.reason is not None:
        assert refused.reason == case.reason, refused.message
        assert any(
            r.name == "sagewire.audit" and f"reason={case.reason}" in r.getMessage()
            for r in caplog.records
        )
    secrets = [value for _, value in metadata if len(value) > 8]
    for record in caplog.records:
        text = record.getMessage()
        assert not any(secret in text or secret.split()[-1] in text for secret in secrets)


async def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30
