"""Fixtures for async inference: moto's S3 server on loopback, an emulator that reads and
writes it, and sagewire with async routes pointed at both. Real S3 API calls throughout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest
import pytest_asyncio
import trustme
from async_support import (
    ASYNC_EMULATOR_CONFIG,
    INPUTS_BUCKET,
    STAGING_BUCKET,
    async_settings,
)
from auth_support import API_KEY_LINES, AUTH_ROUTES
from security_support import Issuer, running_issuer, write_server_files

from sagewire.emulator.s3_server import create_buckets, running_s3
from sagewire.emulator.server import RunningEmulator, running_emulator
from support import TEST_SIGV4_KEYS, Sagewire, settings_for, start_sagewire


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def s3_url() -> AsyncIterator[str]:
    """moto's S3 server, with the staging and caller-input buckets."""
    with running_s3() as url:
        await create_buckets(url, [STAGING_BUCKET, INPUTS_BUCKET])
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def s3(s3_url: str) -> AsyncIterator[Any]:
    """A plain aioboto3 S3 client, to seed inputs and look at what sagewire left behind."""
    async with aioboto3.Session().client("s3", endpoint_url=s3_url, region_name="us-east-1") as c:
        yield c


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def async_emulator(s3_url: str) -> AsyncIterator[RunningEmulator]:
    async with running_emulator(
        ASYNC_EMULATOR_CONFIG, s3_endpoint_url=s3_url, verify_sigv4=TEST_SIGV4_KEYS
    ) as emulator:
        yield emulator


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def async_sagewire(async_emulator: RunningEmulator, s3_url: str) -> AsyncIterator[Sagewire]:
    async with start_sagewire(async_emulator.url, **async_settings(s3_url)) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def issuer() -> AsyncIterator[Issuer]:
    """A JWT issuer whose JWKS is served over HTTP on loopback (one RSA key, "k1")."""
    async with running_issuer() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def auth_sagewire(
    emulator: RunningEmulator, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Sagewire, trustme.CA]]:
    """sagewire over TLS (server certificate only) with JWT and API-key authentication."""
    directory = tmp_path_factory.mktemp("auth")
    ca = trustme.CA()
    keys = directory / "api-keys"
    keys.write_text(API_KEY_LINES)
    settings = settings_for(
        emulator,
        routes=AUTH_ROUTES,
        server={"tls": write_server_files(directory, ca, None)},
        auth={
            "jwt": issuer.jwt_settings(max_token_bytes=4096),
            "api_keys": {"file": str(keys)},
            "groups": {"ml-readers": ["key:reader"]},
            "reflection_callers": ["jwt:sub:svc-fraud"],
        },
    )
    async with start_sagewire(emulator, settings) as sw:
        yield sw, ca
