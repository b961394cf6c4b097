"""sagewire: the gRPC (and REST) front door for models on Amazon SageMaker. Run the gateway,
or call a running one.

sagewire serve --config FILE     run the gateway against AWS (or AWS_ENDPOINT_URL_* overrides)
sagewire local [--config FILE]   run the gateway plus the local SageMaker emulator (no AWS)
sagewire check-config FILE       validate a configuration file and exit
sagewire api-key new NAME        make an API key: the key (for the caller) and its hash line

and, as a client of a running sagewire (sagewire.client.cli): invoke, stream, chat, jobs, models.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from sagewire.cli.startup import Ports, listening_lines, run, warn_if_unusable
from sagewire.client.cli import main as client_cli
from sagewire.config import ConfigError, Settings, load_settings
from sagewire.observability import logs
from sagewire.transports.grpc.server import SagewireServer, check_listeners

log = logging.getLogger("sagewire")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sagewire")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree uninstalled
        return "unknown"


_SERVE = (
    "Run the gateway: gRPC on server.listen (and the REST bridge on rest.listen), calling "
    "SageMaker with credentials and region from the standard AWS chain. Stops on SIGTERM or "
    "SIGINT after draining."
)
_LOCAL = (
    "Run the gateway with a local SageMaker Runtime emulator (demo models, fault injection) "
    "and a local S3, so no AWS account is needed. `make run` runs this with config/local.toml."
)
_CHECK = "Validate a configuration file (and SAGEWIRE_* variables) and exit: 0 valid, 2 not."
_HEALTH = "Ask a running sagewire's grpc.health.v1 service; exit 0 when SERVING, else 1."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagewire", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"sagewire {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway against AWS", description=_SERVE)
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="worker processes sharing the ports (SO_REUSEPORT); about one per core "
        "(docs/deploy.md, Workers). Default 1: one process, no supervisor",
    )
    local = sub.add_parser(
        "local", help="run the gateway with the local SageMaker emulator", description=_LOCAL
    )
    local.add_argument("--config", help="gateway TOML configuration (routes to demo endpoints)")
    local.add_argument("--emulator-config", help="emulator TOML (default: built-in demo models)")
    local.add_argument("--emulator-port", type=int, default=0, help="emulator port (0 = any)")
    local.add_argument(
        "--emulator-bidi-port", type=int, default=0, help="emulator HTTP/2 TLS port (0 = any)"
    )
    check = sub.add_parser("check-config", help="validate a configuration file", description=_CHECK)
    check.add_argument("config")
    keys = sub.add_parser("api-key", help="make static API keys ([auth.api_keys])")
    key_verbs = keys.add_subparsers(dest="verb", required=True)
    new = key_verbs.add_parser("new", help="print a new key and its hashes-file line")
    new.add_argument("name", help="the key's name: its principal is key:<name>")
    probe = sub.add_parser(
        "health", help="probe a running sagewire's gRPC health service", description=_HEALTH
    )
    probe.add_argument("--target", default="127.0.0.1:50051")
    probe.add_argument("--service", default="", help="service name ('' = overall)")
    probe.add_argument("--timeout", type=float, default=3.0)
    client_cli.add_commands(sub)
    # Every command's own --help starts with what it does (its one-line help, unless it has a
    # longer description).
    for action in sub._choices_actions:
        command = sub.choices[action.dest]
        command.description = command.description or action.help
    return parser


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count (1-256)")
    return count


def _probe(target: str, service: str, timeout: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _new_api_key(name: str) -> int:
    from sagewire.security.api_keys import ApiKeyFileError, new_key, parse_hashes

    key, line = new_key(name)
    try:
        parse_hashes(line, "name")  # the name must make a valid line
    except ApiKeyFileError:
        print(
            f"sagewire: {name!r} is not a key name: 1-128 of letters, digits, . _ @ -",
            file=sys.stderr,
        )
        return 2
    print(f"key (give to the caller, store nowhere else): {key}", file=sys.stderr)
    print(line)
    return 0


async def _serve(settings: Settings, stack: AsyncExitStack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with stack:
        server = SagewireServer(settings)
        async with server:
            ports = Ports(
                server.port, server.rest_port, server.metrics_port, server.maintenance_port
            )
            for line in listening_lines(settings, ports):
                print(line, file=sys.stderr, flush=True)
            # In the background: the credential chain may ask the instance metadata service.
            warnings = asyncio.create_task(warn_if_unusable(settings))
            await stop.wait()
            warnings.cancel()
            log.info("signal received")


async def _local(args: argparse.Namespace) -> None:
    from sagewire.emulator.config import default_config, load_config
    from sagewire.emulator.s3_server import create_buckets, running_s3
    from sagewire.emulator.server import running_emulator

    emulator_config = (
        load_config(args.emulator_config) if args.emulator_config else default_config()
    )
    stack = AsyncExitStack()
    # Async inference needs S3: moto's server on a free loopback port, which the emulator and
    # sagewire both reach through their ordinary S3 endpoint setting.
    try:
        s3_url: str | None = stack.enter_context(running_s3())
    except RuntimeError as exc:
        s3_url = None
        print(f"sagewire: no local S3, async routes will fail: {exc}", file=sys.stderr)
    # bidi=True: the HTTP/2 TLS listener too, with a throwaway CA made now (never on disk
    # after exit) that sagewire is told to trust.
    emulator = await stack.enter_async_context(
        running_emulator(
            emulator_config,
            port=args.emulator_port,
            bidi=True,
            bidi_port=args.emulator_bidi_port,
            s3_endpoint_url=s3_url,
        )
    )
    # The emulator accepts any signature; dummy credentials keep a fresh machine AWS-free.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    aws = {
        "runtime_endpoint_url": emulator.url,
        "control_endpoint_url": emulator.url,
        "bidi_endpoint_url": emulator.bidi_url,
        "ca_bundle": str(emulator.ca_file),
    }
    if s3_url is not None:
        aws["s3_endpoint_url"] = s3_url
    settings = load_settings(args.config, overrides={"aws": aws})
    if s3_url is not None:
        await create_buckets(s3_url, _staging_buckets(settings))
        print(f"S3 (moto) on {s3_url}", file=sys.stderr, flush=True)
    print(
        f"SageMaker emulator on {emulator.url} (HTTP/2 bidi: {emulator.bidi_url}, "
        f"CA: {emulator.ca_file})",
        file=sys.stderr,
        flush=True,
    )
    await _serve(settings, stack)


def _staging_buckets(settings: Settings) -> set[str]:
    """The buckets async routes stage inputs in: made in the local S3 so `make run` just works."""
    buckets = {route.async_.staging_bucket for route in settings.routes.values()}
    buckets.add(settings.async_jobs.staging_bucket)
    return {bucket for bucket in buckets if bucket}


def _refuse_published_keys(settings: Settings, source: str) -> None:
    """`serve` is for real deployments: the key in config/local.toml lets anyone forge job ids."""
    published = settings.async_jobs.published_keys()
    if published:
        raise ConfigError(
            source,
            [
                f"async_jobs.job_id_keys[{at}]: is the development key published in "
                "config/local.toml, with which anyone can forge job ids; `sagewire serve` "
                "needs a key of your own (`openssl rand -base64 32`, docs/async.md). Only "
                "`sagewire local` accepts it"
                for at in published
            ],
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in client_cli.COMMANDS:
        return client_cli.run(args)
    try:
        if args.command == "health":
            return _probe(args.target, args.service, args.timeout)
        if args.command == "api-key":
            return _new_api_key(args.name)
        if args.command == "check-config":
            load_settings(args.config)
            print(f"{args.config}: OK")
            return 0
        if args.command == "serve":
            settings = load_settings(args.config)
            _refuse_published_keys(settings, args.config or "(defaults)")
            logs.configure(settings.server.log_level, settings.server.log_format)
            if args.workers > 1:
                from sagewire.cli import workers

                return workers.serve(settings, args.workers)
            run(_serve(settings, AsyncExitStack()))
            return 0
        settings = load_settings(args.config)  # fail fast, before starting anything
        check_listeners(settings)  # before the emulator and S3 start
        logs.configure("INFO", settings.server.log_format)
        run(_local(args))
        return 0
    except ConfigError as exc:
        print(f"sagewire: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sagewire: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
