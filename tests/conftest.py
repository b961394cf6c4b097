"""Shared fixtures: a real SageMaker emulator and real sagewire servers on free loopback ports.

Nothing here stubs AWS: sagewire talks real aioboto3 over HTTP to the emulator, and tests talk
real grpc.aio to sagewire.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from hypothesis import settings

# Property tests run on a shared 2-core CI machine: hypothesis' 200 ms per-example deadline
# measures that machine's load, not the code, so it is off. Examples are derandomised so CI
# runs the same cases every time; `HYPOTHESIS_PROFILE=explore` searches fresh ones locally.
settings.register_profile("ci", deadline=None, derandomize=True)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# These keep tests off any real AWS account; the test emulators verify SigV4 signatures
# against them (TEST_SIGV4_KEYS), so a broken signer fails loudly.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ[_key] = _value
for _key in (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
):
    os.environ.pop(_key, None)

from sagewire.emulator.server import RunningEmulator, running_emulator  # noqa: E402
from support import (  # noqa: E402
    TEST_EMULATOR_CONFIG,
    TEST_SIGV4_KEYS,
    Sagewire,
    default_aws_client,
    start_sagewire,
    use_aws_client,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(
        TEST_EMULATOR_CONFIG, bidi=True, verify_sigv4=TEST_SIGV4_KEYS
    ) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _healthy_emulator(request: pytest.FixtureRequest) -> None:
    """Tests that touch the emulator start from configured faults and zero counters."""
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").reset()


@pytest.fixture(scope="session")
def aws_client() -> str:
    """The aws.client of the sagewire servers a test starts: the default, except in modules
    that run over both clients (`pytestmark = support.BOTH_AWS_CLIENTS` parametrises this)."""
    return default_aws_client()


@pytest.fixture(scope="module", autouse=True)
def _servers_use_aws_client(aws_client: str) -> Iterator[None]:
    """Every server the module starts (settings_for) uses the module's aws_client."""
    previous = use_aws_client(aws_client)
    yield
    use_aws_client(previous)


class _Servers:
    """One shared sagewire server per aws.client, started on first use."""

    def __init__(self, emulator: RunningEmulator, stack: AsyncExitStack) -> None:
        self._emulator = emulator
        self._stack = stack
        self._servers: dict[str, Sagewire] = {}

    async def get(self, client: str) -> Sagewire:
        if client not in self._servers:
            server = start_sagewire(self._emulator, aws={"client": client})
            self._servers[client] = await self._stack.enter_async_context(server)
        return self._servers[client]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _shared_servers(emulator: RunningEmulator) -> AsyncIterator[_Servers]:
    async with AsyncExitStack() as stack:
        yield _Servers(emulator, stack)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sagewire(_shared_servers: _Servers, aws_client: str) -> Sagewire:
    """A sagewire server with the standard test routes, shared by the session (one per
    aws.client)."""
    return await _shared_servers.get(aws_client)


def pytest_runtest_call(item: pytest.Item) -> None:
    """In modules run over both clients, every sagewire a test receives must be one of its
    aws_client: a module-scoped server fixture that does not depend on `aws_client` would be
    shared by both runs and test one client twice."""
    callspec = getattr(item, "callspec", None)
    client = callspec.params.get("aws_client") if callspec is not None else None
    if client is None:
        return
    module = vars(getattr(item, "module", None) or object())
    for name, value in getattr(item, "funcargs", {}).items():
        # Only the module's own fixtures: shared ones (async_sagewire, for SubmitAsync, which is
        # on aioboto3 whatever aws.client says) are not meant to follow the parameter.
        if name not in module or not isinstance(value, Sagewire):
            continue
        if value.server.settings.aws.client != client:
            pytest.fail(
                f"fixture {name!r} serves aws.client={value.server.settings.aws.client!r} in the "
                f"{client!r} run: make it depend on aws_client",
                pytrace=False,
            )
