"""sagewire.aws.lean_http1.Http1Pool against scripted raw HTTP/1.1 servers on loopback
(tests/h1_script.py), on both event loops sagewire runs on (asyncio's, and uvloop's, which
production runs): every answer shape and failure, with the exact botocore exception and where it
is raised (`post`: before the answer's headers are complete; `Reply.read`: after), and the
pool's places afterwards. Most tests use a pool of one connection, so a place leaked by a
failure shows as the following call hanging (bounded by BOUND_S), not passing.

Nothing is mocked: real sockets, real TLS (trustme). Timeouts under test are 0.3 s against a
server silent until the test ends; everything else waits on events, bounded far above any
scheduling stall of a loaded machine.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import httptools
import pytest
import trustme
import uvloop
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from h1_script import BOUND_S, Peer, ScriptedServer, answer, eventually, scripted_server, serve
from yarl import URL

from sagewire.aws.error_table import Cut
from sagewire.aws.errors import connection_cut, map_aws_error
from sagewire.aws.lean_http1 import KEEPALIVE_S, ConnectFailed, Http1Pool, Reply

type Runner = Callable[[Coroutine[Any, Any, None]], None]


def _asyncio(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(_bounded(main))


def _uvloop(main: Coroutine[Any, Any, None]) -> None:
    uvloop.run(_bounded(main))


async def _bounded(main: Awaitable[None]) -> None:
    async with asyncio.timeout(4.5 * BOUND_S):
        await main


LOOPS = pytest.mark.parametrize("run", [_asyncio, _uvloop], ids=["asyncio", "uvloop"])
PATH = "/endpoints/e/invocations"
# For a close the client must make on its own, before the keep-alive sweep could make it for
# it (which would hide the bug): half the keep-alive, still far above any stall on loopback.
SOON_S = KEEPALIVE_S / 2


def _url(server: ScriptedServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


def _pool(
    server: ScriptedServer,
    *,
    limit: int = 1,
    connect_s: float = BOUND_S,
    read_s: float = BOUND_S,
    tls: ssl.SSLContext | None = None,
) -> Http1Pool:
    return Http1Pool(_url(server, "https" if tls else "http"), limit, connect_s, read_s, tls)


def _headers(pool: Http1Pool, body: bytes) -> dict[str, str]:
    """What sagewire.aws.lean sends, in its order (values made up)."""
    return {
        "X-Amz-Target": "x",
        "Content-Type": "application/json",
        "User-Agent": "sagewire-test",
        "host": pool.netloc,
        "Authorization": "AWS4-HMAC-SHA256 Credential=test",
        "amz-sdk-invocation-id": "0c5b6d36-0000-4000-8000-000000000000",
        "amz-sdk-request": "attempt=1; max=3",
        "Content-Length": str(len(body)),
        "Accept-Encoding": "identity",
    }


async def _post(pool: Http1Pool, body: bytes = b"x") -> Reply:
    return await pool.post(pool.endpoint_url + PATH, _headers(pool, body), body)


async def _call(pool: Http1Pool, body: bytes = b"x") -> bytes:
    reply = await _post(pool, body)
    assert reply.status == 200
    try:
        return await reply.read()
    finally:
        reply.close()


def _places(pool: Http1Pool) -> tuple[int, int]:
    """(connections counted against the limit, idle ones)."""
    return pool._open, len(pool._idle)


async def _still_works(pool: Http1Pool, server: ScriptedServer, peers: int) -> None:
    """After a failure: nothing counted, and the next call succeeds (the server having seen
    `peers` connections by then)."""
    assert _places(pool) == (0, 0)
    assert not pool._waiters
    assert await _call(pool, b"after") == b"echo:after"
    assert len(server.peers) == peers
    assert _places(pool) == (1, 1)


async def _silent(peer: Peer) -> None:
    await peer.request()
    await peer.server.release.wait()


async def _stall(peer: Peer) -> None:
    """The headers and half the body, then silence."""
    await peer.request()
    await peer.send(answer(b"0123456789" * 10)[:-50])
    await peer.server.release.wait()


# -- answers --------------------------------------------------------------------------------


@LOOPS
def test_a_content_length_answer_in_one_packet(run: Runner) -> None:
    async def one_packet(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b'{"a":1}', extra=b"X-Amzn-Invoked-Production-Variant: v1\r\n"))
        await serve(peer)

    async def main() -> None:
        async with scripted_server([one_packet]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert reply.status == 200
            assert reply.headers["x-amzn-invoked-production-variant"] == "v1"
            assert reply.headers["Content-Type"] == "application/json"
            assert (b"X-Amzn-Invoked-Production-Variant", b"v1") in reply.raw_headers
            assert await reply.read() == b'{"a":1}'
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
def test_an_answer_split_byte_by_byte(run: Runner) -> None:
    async def bytewise(peer: Peer) -> None:
        await peer.request()
        data = answer(b"0123456789", extra=b"X-Long: " + b"v" * 300 + b"\r\n")
        await peer.send(*(data[i : i + 1] for i in range(len(data))))
        await serve(peer)

    async def main() -> None:
        async with scripted_server([bytewise]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert reply.headers["x-long"] == "v" * 300
            assert await reply.read() == b"0123456789"
            assert await _call(pool, b"again") == b"echo:again"  # the parser starts afresh
            assert len(server.peers) == 1

    run(main())


@LOOPS
def test_a_chunked_answer_split_across_writes(run: Runner) -> None:
    async def chunked(peer: Peer) -> None:
        await peer.request()
        await peer.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r",
            b"\nhel",
            b"lo\r\n1",
            b"0\r\n" + b"a" * 16 + b"\r\n0\r\n",
            b"\r\n",
        )
        await serve(peer)

    async def main() -> None:
        async with scripted_server([chunked]) as server:
            pool = _pool(server)
            assert await _call(pool) == b"hello" + b"a" * 16
            assert _places(pool) == (1, 1)
            assert await _call(pool, b"again") == b"echo:again"  # kept alive
            assert len(server.peers) == 1

    run(main())


@LOOPS
def test_an_answer_delimited_by_the_close(run: Runner) -> None:
    async def until_close(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", b"two")
        peer.writer.close()

    async def main() -> None:
        async with scripted_server([until_close]) as server:
            pool = _pool(server)
            assert await _call(pool) == b"part one, two"
            assert _places(pool) == (0, 0)  # the close that ended the answer freed its place
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
@pytest.mark.parametrize(
    "empty",
    [b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
    ids=["204", "content-length-0"],
)
def test_an_empty_body(run: Runner, empty: bytes) -> None:
    async def no_body(peer: Peer) -> None:
        await peer.request()
        await peer.send(empty)
        await serve(peer)

    async def main() -> None:
        async with scripted_server([no_body]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert await reply.read() == b""
            assert _places(pool) == (1, 1)
            assert await _call(pool, b"again") == b"echo:again"
            assert len(server.peers) == 1

    run(main())


@LOOPS
def test_a_100_continue_before_the_answer(run: Runner) -> None:
    async def interim(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n", answer(b"real"))
        await serve(peer)

    async def main() -> None:
        async with scripted_server([interim]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert reply.status == 200
            assert "x-interim" not in reply.headers
            assert all(name != b"X-Interim" for name, _ in reply.raw_headers)
            assert await reply.read() == b"real"
            assert await _call(pool, b"again") == b"echo:again"
            assert len(server.peers) == 1

    run(main())


@LOOPS
def test_a_connection_close_answer_is_not_reused(run: Runner) -> None:
    closed = asyncio.Event()

    async def close_asked(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"last", extra=b"Connection: close\r\n"))
        await peer.closed_by_client()  # the server leaves it to the client to close
        closed.set()

    async def main() -> None:
        async with scripted_server([close_asked]) as server:
            pool = _pool(server)
            assert await _call(pool) == b"last"
            assert _places(pool) == (0, 0)  # closed as the answer ended, not kept idle
            async with asyncio.timeout(SOON_S):
                await closed.wait()  # the server saw the client close it
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_keep_alive_reuses_the_connection(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server() as server:
            pool = _pool(server, limit=4)
            assert await _call(pool, b"one") == b"echo:one"
            assert await _call(pool, b"two") == b"echo:two"
            assert len(server.peers) == 1
            assert len(server.peers[0].requests) == 2
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
def test_a_6_mb_body_in_big_chunks(run: Runner) -> None:
    body = bytes(range(256)) * (6 * 1024 * 4)  # 6 MiB

    async def big(peer: Peer) -> None:
        await peer.request()
        data = answer(body)
        await peer.send(*(data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)))
        await serve(peer)

    async def main() -> None:
        async with scripted_server([big]) as server:
            pool = _pool(server)
            assert await _call(pool) == body
            assert await _call(pool, b"again") == b"echo:again"
            assert len(server.peers) == 1

    run(main())


# -- failures -------------------------------------------------------------------------------


@LOOPS
def test_server_closes_before_any_byte(run: Runner) -> None:
    async def close_at_once(peer: Peer) -> None:
        await peer.request()
        peer.writer.close()

    async def main() -> None:
        async with scripted_server([close_at_once]) as server:
            pool = _pool(server)
            with pytest.raises(ConnectionClosedError) as caught:
                await _post(pool)
            assert connection_cut(caught.value) is Cut.LOST  # the request may have arrived
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_server_resets_before_answering(run: Runner) -> None:
    async def reset(peer: Peer) -> None:
        await peer.request()
        peer.reset()

    async def main() -> None:
        async with scripted_server([reset]) as server:
            pool = _pool(server)
            with pytest.raises(EndpointConnectionError) as caught:
                await _post(pool)
            assert isinstance(caught.value.kwargs["error"], ConnectionResetError)
            assert not isinstance(caught.value.kwargs["error"], ConnectFailed)
            assert connection_cut(caught.value) is Cut.LOST
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_server_closes_mid_body(run: Runner) -> None:
    async def half(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"0123456789" * 10)[:-90])
        peer.writer.close()

    async def main() -> None:
        async with scripted_server([half]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert reply.status == 200
            with pytest.raises(ResponseStreamingError):
                await reply.read()
            reply.close()
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
@pytest.mark.parametrize(
    "garbage",
    [b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n", b"\x00\x01\x02 hello\r\n\r\n"],
    ids=["protocol", "status", "binary"],
)
def test_a_garbage_status_line(run: Runner, garbage: bytes) -> None:
    async def bad(peer: Peer) -> None:
        await peer.request()
        await peer.send(garbage)
        await peer.server.release.wait()

    async def main() -> None:
        async with scripted_server([bad]) as server:
            pool = _pool(server)
            with pytest.raises(ConnectionClosedError) as caught:
                await _post(pool)
            assert isinstance(caught.value.kwargs["error"], httptools.HttpParserError)
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "8k-writes"])
def test_headers_over_64_kib_are_refused(run: Runner, split: bool) -> None:
    async def huge(peer: Peer) -> None:
        await peer.request()
        head = answer(
            b"{}", extra=b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(70))
        )
        await peer.send(
            *([head[i : i + 8192] for i in range(0, len(head), 8192)] if split else [head])
        )
        await peer.server.release.wait()

    async def main() -> None:
        async with scripted_server([huge]) as server:
            pool = _pool(server)
            with pytest.raises(ConnectionClosedError):
                await _post(pool)
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_headers_under_64_kib_are_accepted(run: Runner) -> None:
    async def large(peer: Peer) -> None:
        await peer.request()
        pads = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(60))
        await peer.send(answer(b"ok", extra=pads))
        await serve(peer)

    async def main() -> None:
        async with scripted_server([large]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            assert reply.headers["x-pad-59"] == "p" * 1000
            assert await reply.read() == b"ok"

    run(main())


@LOOPS
def test_read_timeout_before_the_headers(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server([_silent]) as server:
            pool = _pool(server, read_s=0.3)
            with pytest.raises(ReadTimeoutError) as caught:
                await _post(pool)
            assert connection_cut(caught.value) is Cut.TIMED_OUT
            pool.read_s = BOUND_S  # the rest is not about the timeout
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_read_timeout_mid_body(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server([_stall]) as server:
            pool = _pool(server, read_s=0.3)
            reply = await _post(pool)
            with pytest.raises(ReadTimeoutError):
                await reply.read()
            reply.close()
            pool.read_s = BOUND_S
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_connect_refused_is_unreachable(run: Runner) -> None:
    async def main() -> None:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        pool = Http1Pool(f"http://127.0.0.1:{port}", 1, BOUND_S, BOUND_S, None)
        for _ in range(2):  # the second would wait forever for a place the first leaked
            with pytest.raises(EndpointConnectionError) as caught:
                await _post(pool)
            assert isinstance(caught.value.kwargs["error"], ConnectFailed)
            assert connection_cut(caught.value) is Cut.UNREACHABLE
            assert map_aws_error(caught.value, "e").reason == "RUNTIME_UNREACHABLE"
            assert _places(pool) == (0, 0)

    run(main())


@LOOPS
def test_connect_timeout_in_an_unanswered_tls_handshake(run: Runner) -> None:
    async def mute(peer: Peer) -> None:  # takes the TCP connection, never answers the hello
        await peer.server.release.wait()

    async def main() -> None:
        async with scripted_server([mute, mute]) as server:
            pool = _pool(server, connect_s=0.3, tls=ssl.create_default_context())
            for _ in range(2):
                with pytest.raises(ConnectTimeoutError) as caught:
                    await _post(pool)
                assert connection_cut(caught.value) is Cut.UNREACHABLE
                assert _places(pool) == (0, 0)

    run(main())


@LOOPS
def test_connect_timeout_on_a_full_listen_backlog(run: Runner) -> None:
    """Linux drops a SYN while the listener's accept queue is full, so the TCP connect itself
    hangs. Skipped where a probe shows the kernel does not (then this cannot be made exact)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(1.0)
            fillers.append(filler)
            try:
                filler.connect(address)
            except TimeoutError:
                break  # this SYN was dropped: the queue is full
        else:
            pytest.skip("the kernel accepted every connect: no full backlog to time out on")

        async def main() -> None:
            pool = Http1Pool(f"http://127.0.0.1:{address[1]}", 1, 0.3, BOUND_S, None)
            for _ in range(2):
                with pytest.raises(ConnectTimeoutError) as caught:
                    await _post(pool)
                assert connection_cut(caught.value) is Cut.UNREACHABLE
                assert _places(pool) == (0, 0)

        run(main())
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- the request ----------------------------------------------------------------------------


@LOOPS
@pytest.mark.parametrize(
    "bad",
    [
        {"X-Amzn-SageMaker-Custom-Attributes": "a\r\nX-Evil: 1"},
        {"X-Amzn-SageMaker-Custom-Attributes": "a\nb"},
        {"X-Amzn-SageMaker-Custom-Attributes": "a\rb"},
        {"X-Evil\r\nX": "1"},
        {"host": "example.com\r\nX-Evil: 1"},
        {"HOST": "example.com\r\nX-Evil: 1"},  # a second Host: not written, still refused
    ],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name", "crlf-host", "crlf-second-host"],
)
def test_a_cr_or_lf_in_a_header_is_refused_before_sending(run: Runner, bad: dict[str, str]) -> None:
    async def main() -> None:
        async with scripted_server() as server:
            pool = _pool(server)
            with pytest.raises(ValueError, match="Newline or carriage return"):
                await pool.post(pool.endpoint_url + PATH, _headers(pool, b"x") | bad, b"x")
            assert server.peers == []  # not even a connection
            await _still_works(pool, server, peers=1)

    run(main())


@LOOPS
@pytest.mark.parametrize(
    "change",
    [{}, {"Accept": "application/json"}, {"accept": "*/*"}, {"host": None}, {"host": "h:1"}],
    ids=["lean", "accept", "accept-lower", "no-host", "host-given"],
)
def test_the_request_bytes_are_aiohttps(run: Runner, change: dict[str, str | None]) -> None:
    """What aiohttp writes, as sagewire.aws.lean_http configures it (as aiobotocore does),
    for the same URL, headers and body: Host first, the headers in order, `Accept: */*`
    unless given."""
    body = b'{"inputs": "caf\xc3\xa9"}'

    async def main() -> None:
        async with scripted_server() as server:
            pool = _pool(server)
            headers = {k: v for k, v in (_headers(pool, body) | change).items() if v is not None}
            reply = await pool.post(pool.endpoint_url + PATH + "?x=%2F", headers, body)
            assert await reply.read() == b"echo:" + body
            async with aiohttp.ClientSession(
                skip_auto_headers={"CONTENT-TYPE"}, auto_decompress=False
            ) as session:
                url = URL(pool.endpoint_url + PATH + "?x=%2F", encoded=True)
                async with session.post(url, headers=headers, data=body) as response:
                    assert await response.read() == b"echo:" + body
            ours, theirs = server.peers[0].requests[0], server.peers[1].requests[0]
            assert ours == theirs
            request_line, host = ours.split(b"\r\n")[:2]
            assert request_line == b"POST " + PATH.encode() + b"?x=%2F HTTP/1.1"
            assert host.lower().startswith(b"host: ")

    run(main())


# -- the pool -------------------------------------------------------------------------------


def _held(go: asyncio.Event) -> Callable[[Peer], Awaitable[None]]:
    """Answers the first request only once `go` is set; then serves."""

    async def script(peer: Peer) -> None:
        body = (await peer.request()).split(b"\r\n\r\n", 1)[1]
        async with asyncio.timeout(BOUND_S):
            await go.wait()
        await peer.send(answer(b"echo:" + body))
        await serve(peer)

    return script


async def _waiting(pool: Http1Pool, count: int) -> None:
    await eventually(lambda: len(pool._waiters) == count)


@LOOPS
def test_a_pool_of_one_serves_concurrent_calls_in_turn_first_come_first_served(
    run: Runner,
) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with scripted_server([_held(go)]) as server:
            pool = _pool(server)
            first = asyncio.create_task(_call(pool, b"a"))
            await server.wait_requests(1)
            rest = []
            for n, body in enumerate((b"b", b"c", b"d"), 1):
                rest.append(asyncio.create_task(_call(pool, body)))
                await _waiting(pool, n)
            assert len(server.requests) == 1  # the others wait for the one connection
            go.set()
            assert await first == b"echo:a"
            assert [await task for task in rest] == [b"echo:b", b"echo:c", b"echo:d"]
            assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in server.requests] == [
                b"a",
                b"b",
                b"c",
                b"d",
            ]
            assert len(server.peers) == 1
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
def test_a_waiter_cancelled_while_waiting_takes_no_place(run: Runner) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with scripted_server([_held(go)]) as server:
            pool = _pool(server)
            first = asyncio.create_task(_call(pool, b"a"))
            await server.wait_requests(1)
            cancelled = asyncio.create_task(_call(pool, b"b"))
            await _waiting(pool, 1)
            third = asyncio.create_task(_call(pool, b"c"))
            await _waiting(pool, 2)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            go.set()
            assert await first == b"echo:a"
            assert await third == b"echo:c"
            assert not pool._waiters
            assert _places(pool) == (1, 1)
            assert len(server.requests) == 2

    run(main())


@LOOPS
def test_a_waiter_cancelled_once_woken_passes_the_place_on(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server([_stall]) as server:
            pool = _pool(server)
            reply = await _post(pool, b"a")
            woken = asyncio.create_task(_call(pool, b"b"))
            await _waiting(pool, 1)
            third = asyncio.create_task(_call(pool, b"c"))
            await _waiting(pool, 2)
            reply.close()  # closes the first connection: its place wakes `woken` at once...
            woken.cancel()  # ...which is cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await woken
            assert await third == b"echo:c"
            assert _places(pool) == (1, 1)
            assert len(server.peers) == 2

    run(main())


@LOOPS
def test_a_caller_cancelled_awaiting_the_answer_closes_its_connection(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server([_silent]) as server:
            pool = _pool(server)
            caller = asyncio.create_task(_post(pool))
            await server.wait_requests(1)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert _places(pool) == (0, 0)
            async with asyncio.timeout(BOUND_S):
                await server.peers[0].closed_by_client()
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_a_caller_cancelled_reading_the_body_closes_its_connection(run: Runner) -> None:
    async def main() -> None:
        async with scripted_server([_stall]) as server:
            pool = _pool(server)
            reply = await _post(pool)
            reader = asyncio.create_task(reply.read())
            await asyncio.sleep(0)
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert _places(pool) == (0, 0)
            async with asyncio.timeout(BOUND_S):
                await server.peers[0].closed_by_client()
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_a_cancel_after_the_answer_leaves_the_next_exchange_alone(run: Runner) -> None:
    """A caller cancelled once its whole answer is in (the connection already back in the
    pool) must not close the connection another caller took meanwhile. The interleaving is
    forced by handing the connection the answer's bytes directly (the server never sends that
    answer): the next caller's task is scheduled before the cancelled one resumes."""

    async def serve_after_one_silent(peer: Peer) -> None:
        body = (await peer.request()).split(b"\r\n\r\n", 1)[1]
        await peer.send(answer(b"echo:" + body))  # the warm-up call
        await peer.request()  # the cancelled caller's: never answered on the wire
        await serve(peer)

    async def main() -> None:
        async with scripted_server([serve_after_one_silent]) as server:
            pool = _pool(server)
            assert await _call(pool, b"warm") == b"echo:warm"
            connection = pool._idle[-1]
            cancelled = asyncio.create_task(_post(pool, b"a"))
            await server.wait_requests(2)
            following = asyncio.create_task(_call(pool, b"c"))  # scheduled first
            connection.data_received(answer(b"echo:a"))  # the answer is in, the place free
            cancelled.cancel()
            assert await following == b"echo:c"
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert len(server.peers) == 1
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
def test_an_idle_connection_closed_by_the_server_is_replaced(run: Runner) -> None:
    async def once(peer: Peer) -> None:
        body = (await peer.request()).split(b"\r\n\r\n", 1)[1]
        await peer.send(answer(b"echo:" + body))
        peer.writer.close()

    async def main() -> None:
        async with scripted_server([once]) as server:
            pool = _pool(server)
            assert await _call(pool, b"one") == b"echo:one"
            await eventually(lambda: _places(pool) == (0, 0), SOON_S)
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_an_idle_connection_closing_is_not_taken(run: Runner) -> None:
    """The server's FIN makes the transport close itself (the protocol's default
    eof_received); connection_lost follows a loop turn later. A call in between must not take
    that connection. The transport is closed here as the loop closes it on the FIN."""

    async def main() -> None:
        async with scripted_server() as server:
            pool = _pool(server)
            assert await _call(pool, b"one") == b"echo:one"
            transport = pool._idle[-1].transport
            assert transport is not None
            transport.close()
            assert await _call(pool, b"two") == b"echo:two"
            assert len(server.peers) == 2
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
@pytest.mark.parametrize(
    "unsolicited",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Len", b"junk"],
    ids=["whole-answer", "partial-answer", "junk"],
)
@pytest.mark.parametrize("same_packet", [False, True], ids=["later", "same-packet"])
def test_data_nobody_asked_for_closes_the_connection(
    run: Runner, unsolicited: bytes, same_packet: bool
) -> None:
    async def chatty(peer: Peer) -> None:
        body = (await peer.request()).split(b"\r\n\r\n", 1)[1]
        if same_packet:
            await peer.send(answer(b"echo:" + body) + unsolicited)
        else:
            await peer.send(answer(b"echo:" + body))
            async with asyncio.timeout(BOUND_S):
                await peer.server.release.wait()  # the test saw the answer; now the extra
            await peer.send(unsolicited)
        await serve(peer)  # a client that kept the connection would be answered here

    async def main() -> None:
        async with scripted_server([chatty]) as server:
            pool = _pool(server)
            assert await _call(pool, b"one") == b"echo:one"
            if same_packet:  # closed in the read that brought the answer
                assert _places(pool) == (0, 0)
            server.release.set()
            async with asyncio.timeout(SOON_S):
                await server.peers[0].finished.wait()  # served until the client closed
            assert _places(pool) == (0, 0)
            await _still_works(pool, server, peers=2)

    run(main())


@LOOPS
def test_a_busy_connection_is_closed_once_the_pool_is_closed(run: Runner) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with scripted_server([_held(go)]) as server:
            pool = _pool(server)
            caller = asyncio.create_task(_call(pool, b"a"))
            await server.wait_requests(1)
            pool.close()
            go.set()
            assert await caller == b"echo:a"  # the exchange in flight completes...
            assert _places(pool) == (0, 0)  # ...and its connection closes, not kept idle
            async with asyncio.timeout(SOON_S):
                await server.peers[0].finished.wait()
            assert _places(pool) == (0, 0)

    run(main())


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@LOOPS
def test_tls_trusting_the_servers_ca(run: Runner, ca: trustme.CA) -> None:
    async def main() -> None:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with scripted_server(tls=_server_tls(ca)) as server:
            pool = _pool(server, tls=trusting)
            assert await _call(pool, b"one") == b"echo:one"
            assert await _call(pool, b"two") == b"echo:two"
            assert len(server.peers) == 1
            assert _places(pool) == (1, 1)

    run(main())


@LOOPS
def test_tls_with_the_wrong_ca(run: Runner, ca: trustme.CA) -> None:
    async def main() -> None:
        other = ssl.create_default_context()
        trustme.CA().configure_trust(other)
        async with scripted_server(tls=_server_tls(ca)) as server:
            pool = _pool(server, tls=other)
            for _ in range(2):
                with pytest.raises(SSLError) as caught:
                    await _post(pool)
                assert isinstance(caught.value.kwargs["error"], ssl.SSLCertVerificationError)
                assert connection_cut(caught.value) is Cut.UNREACHABLE
                assert _places(pool) == (0, 0)

    run(main())
