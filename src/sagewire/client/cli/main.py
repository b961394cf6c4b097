"""The client half of the `sagewire` command: call a running sagewire from a terminal.

    sagewire invoke MODEL --json '{...}' | --data @file     real-time inference
    sagewire stream MODEL --json '{...}'                     print parts as they arrive
    sagewire chat MODEL                                      an interactive Converse session
    sagewire jobs submit|upload|watch|get|read ...           async inference jobs
    sagewire models [NAME]                                   what you may call

Connection options come from flags or the environment (SAGEWIRE_TARGET, SAGEWIRE_CACERT,
SAGEWIRE_CERT, SAGEWIRE_KEY, SAGEWIRE_TOKEN). Exit status: 0 success, 1 the call failed (or
the job failed or expired), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagewire.client.aio import AsyncClient
from sagewire.client.channel import DEFAULT_TARGET, ENV_TARGET, ChannelOptions
from sagewire.client.cli.chat import chat
from sagewire.client.cli.output import Printer, progress_bar
from sagewire.client.errors import SagewireError
from sagewire.client.results import JobState

JSON = "application/json"
COMMANDS = ("invoke", "stream", "chat", "jobs", "models")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad argument found after parsing (exit 2, like argparse's own)."""


def _connection() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("connection (flags override the environment)")
    env = os.environ.get
    conn.add_argument(
        "--target",
        default=env(ENV_TARGET, DEFAULT_TARGET),
        help=f"host:port of sagewire (${ENV_TARGET}, default {DEFAULT_TARGET})",
    )
    conn.add_argument("--tls", action="store_true", help="use TLS with the system roots")
    conn.add_argument(
        "--cacert",
        default=env("SAGEWIRE_CACERT"),
        help="PEM CA bundle to trust ($SAGEWIRE_CACERT); implies TLS",
    )
    conn.add_argument(
        "--cert",
        default=env("SAGEWIRE_CERT"),
        help="PEM client certificate for mutual TLS ($SAGEWIRE_CERT)",
    )
    conn.add_argument(
        "--key", default=env("SAGEWIRE_KEY"), help="PEM client key for mutual TLS ($SAGEWIRE_KEY)"
    )
    conn.add_argument("--server-name", help="TLS name to verify instead of the target's host")
    conn.add_argument(
        "--token", default=env("SAGEWIRE_TOKEN"), help="bearer token ($SAGEWIRE_TOKEN)"
    )
    conn.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="deadline in seconds (default: 30 for single calls, none for "
        "chat, uploads, watching and reading output)",
    )
    conn.add_argument(
        "--no-retries", action="store_true", help="do not retry UNAVAILABLE (gRPC retry policy)"
    )
    conn.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for scripts",
    )
    return common


def _payload_args() -> argparse.ArgumentParser:
    payload = argparse.ArgumentParser(add_help=False)
    body = payload.add_mutually_exclusive_group(required=True)
    body.add_argument("--json", dest="json_text", help="JSON payload (sent exactly as written)")
    body.add_argument("--data", help="payload bytes: literal text, @FILE, or @- for stdin")
    payload.add_argument("--content-type", default="", help="MIME type of the payload")
    payload.add_argument("--accept", default="", help="MIME type wanted in the answer")
    payload.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a SageMaker option the route allows (repeatable), e.g. "
        "custom_attributes=a=b or target_variant=B",
    )
    return payload


def add_commands(sub: Any) -> None:
    """Adds the client verbs to an argparse subparsers object (the `sagewire` command's)."""
    common, payload = _connection(), _payload_args()
    p = sub.add_parser(
        "invoke", parents=[common, payload], help="real-time inference: print the answer"
    )
    p.add_argument("model")
    p = sub.add_parser(
        "stream", parents=[common, payload], help="streaming inference: print parts as they arrive"
    )
    p.add_argument("model")
    p.add_argument("--framing", choices=("raw", "lines", "sse"), help="override the route's")
    p = sub.add_parser(
        "chat",
        parents=[common],
        help="interactive Converse session: each line a turn; Ctrl-C cancels the answer, "
        "Ctrl-D quits",
    )
    p.add_argument("model")
    p.add_argument(
        "--json", dest="json_lines", action="store_true", help="each line is a JSON document"
    )
    p.add_argument(
        "--json-key", metavar="KEY", help='send each line as JSON {"KEY": line}, not plain text'
    )
    p.add_argument(
        "--field", metavar="KEY", help="print only this string field of JSON answer records"
    )
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    _add_job_commands(sub, common)
    p = sub.add_parser("models", parents=[common], help="list the models you may call")
    p.add_argument("name", nargs="?", help="describe one model")


def _add_job_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    jobs = sub.add_parser("jobs", help="async inference jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    p = jobs.add_parser("submit", parents=[common], help="submit a job; print its job id")
    p.add_argument("model")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", dest="json_text", help="JSON input")
    source.add_argument("--data", help="input bytes: literal text, @FILE, or @- for stdin")
    source.add_argument("--input-location", help="an s3:// object the route allows")
    p = jobs.add_parser("upload", parents=[common], help="stream a large file as a job's input")
    p.add_argument("model")
    p.add_argument("file", type=Path)
    for each in jobs.choices["submit"], p:
        each.add_argument("--content-type", default="")
        each.add_argument("--accept", default="")
        each.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    for name, text in (
        ("watch", "print each state a job enters until it ends"),
        ("get", "print a job's state and (small) output"),
    ):
        jobs.add_parser(name, parents=[common], help=text).add_argument("job_id")
    p = jobs.add_parser("read", parents=[common], help="read a completed job's output")
    p.add_argument("job_id")
    p.add_argument("-o", "--out", type=Path, help="write to this file (default: stdout)")


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--option {pair!r}: expected NAME=VALUE")
        options[name] = int(value) if name.endswith("_seconds") and value.isdigit() else value
    return options


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    """body= and content_type= for the call: --json is checked, then sent exactly as typed."""
    if args.json_text is not None:
        try:
            json.loads(args.json_text)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
        return {"body": args.json_text.encode(), "content_type": args.content_type or JSON}
    data: str = args.data
    if data == "@-":
        body = sys.stdin.buffer.read()
    elif data.startswith("@"):
        try:
            body = Path(data[1:]).read_bytes()
        except OSError as exc:
            raise UsageError(f"--data {data}: {exc.strerror}") from None
    else:
        body = data.encode()
    return {"body": body, "content_type": args.content_type}


def _client(args: argparse.Namespace) -> AsyncClient:
    options = ChannelOptions(
        target=args.target,
        tls=args.tls,
        ca_file=args.cacert,
        cert_file=args.cert,
        key_file=args.key,
        server_name=args.server_name,
        token=args.token,
        timeout=args.timeout if args.timeout is not None else 30.0,
        retries=not args.no_retries,
    )
    return AsyncClient(options=options)


async def _run(args: argparse.Namespace, printer: Printer) -> int:
    long = {"timeout": args.timeout}  # long calls: no deadline unless --timeout
    async with _client(args) as client:
        match args.command, getattr(args, "jobs_command", None):
            case "invoke", _:
                printer.invoke(
                    await client.invoke(
                        args.model,
                        **_payload(args),
                        accept=args.accept,
                        options=_options(args.option),
                    )
                )
            case "stream", _:
                async for part in client.stream(
                    args.model,
                    **_payload(args),
                    accept=args.accept,
                    framing=args.framing,
                    options=_options(args.option),
                ):
                    printer.part(part)
            case "chat", _:
                await chat(
                    client,
                    args.model,
                    options=_options(args.option),
                    json_lines=args.json_lines,
                    json_key=args.json_key,
                    field=args.field,
                )
            case "jobs", "submit":
                source = (
                    {"input_location": args.input_location, "content_type": args.content_type}
                    if args.input_location
                    else _payload(args)
                )
                printer.job(
                    await client.submit(
                        args.model,
                        **source,
                        accept=args.accept,
                        options=_options(args.option),
                    )
                )
            case "jobs", "upload":
                if not args.file.is_file():
                    raise UsageError(f"{args.file}: no such file")
                update, bar = progress_bar("upload", args.file.stat().st_size)
                with bar:
                    job = await client.upload(
                        args.model,
                        args.file,
                        content_type=args.content_type,
                        accept=args.accept,
                        options=_options(args.option),
                        progress=update,
                        **long,
                    )
                printer.job(job)
            case "jobs", "watch":
                state = JobState.PENDING
                async for event in client.watch(args.job_id, **long):
                    printer.job_event(event)
                    state = event.state
                return EXIT_OK if state is JobState.COMPLETED else EXIT_FAILED
            case "jobs", "get":
                result = await client.get(args.job_id)
                printer.job_result(result)
                return EXIT_FAILED if result.state in (JobState.FAILED, JobState.EXPIRED) else 0
            case "jobs", "read":
                update, bar = progress_bar("download", None)
                with bar:
                    output = await client.read_output(
                        args.job_id, to=args.out, progress=update, **long
                    )
                if isinstance(output, bytes):
                    sys.stdout.buffer.write(output)
                    sys.stdout.flush()
            case "models", _:
                models = [await client.model(args.name)] if args.name else await client.models()
                printer.models(models)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Runs a parsed client command; returns the exit status."""
    printer = Printer(as_json=args.output == "json")
    try:
        return asyncio.run(_run(args, printer))
    except SagewireError as exc:
        printer.error(exc)
        return EXIT_FAILED
    except UsageError as exc:
        print(f"sagewire {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """`sagewire-client`-only entry point (the server's `sagewire` command adds these verbs)."""
    parser = argparse.ArgumentParser(prog="sagewire", description=__doc__.split("\n\n")[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
