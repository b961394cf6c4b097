"""Run the emulator: ``running_emulator()`` for tests and embedding, ``main()`` for a terminal.

Why: integration tests and ``sagewire local`` both need a real SageMaker-compatible HTTP server
on loopback with a known URL, plus a handle to flip faults and read stats while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from sagewire.emulator.app import build_app
from sagewire.emulator.config import ConfigError, EmulatorConfig, default_config, load_config
from sagewire.emulator.endpoints import EmulatorState
from sagewire.emulator.faults import Fault
from sagewire.emulator.s3_server import running_s3
from sagewire.emulator.sessions import SessionTable
from sagewire.emulator.sigv4 import SigV4Verifier
from sagewire.emulator.stats import EndpointStats

log = logging.getLogger(__name__)


class RunningEmulator:
    """Handle on a started emulator."""

    def __init__(
        self,
        url: str,
        state: EmulatorState,
        bidi_url: str | None = None,
        ca_file: Path | None = None,
        sigv4: SigV4Verifier | None = None,
    ) -> None:
        self.url = url
        self._state = state
        # The signature check (running_emulator(verify_sigv4=...)), with the last requests
        # as received; None when signatures are not checked.
        self.sigv4 = sigv4
        # The HTTP/2 TLS listener for bidirectional streams (running_emulator(bidi=True)) and
        # the throwaway CA its certificate chains to; None without it.
        self.bidi_url = bidi_url
        self.ca_file = ca_file

    @property
    def config(self) -> EmulatorConfig:
        return self._state.config

    def stats(self, endpoint: str) -> EndpointStats:
        """The endpoint's live counters (KeyError naming the known endpoints if unknown)."""
        return self._state.get(endpoint).stats

    def all_stats(self) -> dict[str, dict[str, int]]:
        return self._state.all_stats()

    def sessions(self, endpoint: str) -> SessionTable:
        """The endpoint's live stateful sessions (expire one with ``.expire(id)``)."""
        return self._state.get(endpoint).sessions

    def set_fault(self, endpoint: str, fault: Fault | None) -> None:
        """Inject ``fault`` into calls that start from now on; None makes the endpoint healthy."""
        self._state.set_fault(endpoint, fault)

    def reset(self) -> None:
        """Configured faults back, all counters zero."""
        self._state.reset()


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    bidi: bool = False,
    bidi_port: int = 0,
    s3_endpoint_url: str | None = None,
    verify_sigv4: dict[str, str] | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve ``config`` (default: the demo endpoints) on ``host:port`` (0 = a free port).

    With ``bidi`` also serve InvokeEndpointWithBidirectionalStream over HTTP/2 + TLS on
    ``host:bidi_port``, with a certificate from a throwaway CA made now and deleted on exit.

    InvokeEndpointAsync reads inputs from and writes results to the S3 at ``s3_endpoint_url``
    (None: AWS_ENDPOINT_URL_S3, else AWS).

    With ``verify_sigv4`` (access key id → secret access key), SageMaker API requests must be
    signed with one of those keys: a wrong signature is 403 InvalidSignatureException.
    """
    state = EmulatorState(config or default_config())
    sigv4 = SigV4Verifier(dict(verify_sigv4)) if verify_sigv4 is not None else None
    runner = web.AppRunner(
        build_app(state, s3_endpoint_url, sigv4),
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
        access_log=None,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{url_host}:{bound_port}"
        if not bidi:
            yield RunningEmulator(url, state, sigv4=sigv4)
            return
        # Imported here: h2 and trustme come with the `local` extra, not the gateway's install.
        from sagewire.emulator.bidi import BidiListener
        from sagewire.emulator.tls import throwaway_tls

        with throwaway_tls() as tls:
            listener = BidiListener(state, tls.server_context())
            await listener.start(host, bidi_port)
            try:
                yield RunningEmulator(
                    url, state, f"https://{url_host}:{listener.port}", tls.ca_file, sigv4
                )
            finally:
                await listener.close(shutdown_timeout)
    finally:
        await runner.cleanup()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sagewire.emulator",
        description="Local SageMaker Runtime emulator (InvokeEndpoint and response streams).",
    )
    parser.add_argument("--config", help="TOML file with [endpoints.<name>] tables")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument(
        "--port", type=int, default=8090, help="default 8090 (8080 is the container port); 0 = any"
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--verify-sigv4",
        action="store_true",
        help="refuse requests not signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
        "(403 InvalidSignatureException)",
    )
    s3 = parser.add_mutually_exclusive_group()
    s3.add_argument(
        "--s3-endpoint-url", help="S3 for async invocations (default: AWS_ENDPOINT_URL_S3, AWS)"
    )
    s3.add_argument(
        "--moto", action="store_true", help="start moto's S3 on a free loopback port and use it"
    )
    return parser.parse_args(argv)


async def serve(
    config: EmulatorConfig,
    host: str,
    port: int,
    s3_endpoint_url: str | None = None,
    verify_sigv4: dict[str, str] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_emulator(
        config,
        host,
        port,
        shutdown_timeout=5.0,
        s3_endpoint_url=s3_endpoint_url,
        verify_sigv4=verify_sigv4,
    ) as emulator:
        names = ", ".join(sorted(config.endpoints)) or "(none)"
        print(f"SageMaker Runtime emulator on {emulator.url} endpoints: {names}", flush=True)
        await stop.wait()
        log.info("stopping")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    keys = None
    if args.verify_sigv4:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            print("--verify-sigv4 needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY", file=sys.stderr)
            return 2
        keys = {key: secret}
    if not args.moto:
        asyncio.run(serve(config, args.host, args.port, args.s3_endpoint_url, keys))
        return 0
    with running_s3() as s3_url:
        print(f"S3 (moto) on {s3_url}", flush=True)
        asyncio.run(serve(config, args.host, args.port, s3_url, keys))
    return 0
