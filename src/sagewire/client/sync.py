"""`Client`: the blocking twin of `AsyncClient`, for code without an event loop.

Why a loop thread instead of grpc's blocking stubs: one implementation of every call (the
async one) serves both, so conversions, errors and retries cannot drift apart. The client owns
one daemon thread running an asyncio loop; each method runs the async call there and waits.
Iterators (stream, watch) pull one part at a time, so nothing is read ahead of the caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from sagewire.client.aio import DEFAULT, AsyncClient, Timeout
from sagewire.client.channel import ChannelOptions
from sagewire.client.results import (
    InvokeResult,
    Job,
    JobEvent,
    JobResult,
    ModelInfo,
    StreamPart,
)


class Client:
    """A blocking client: `with Client("host:port") as client: client.invoke(...)`.

    Takes the same arguments as `AsyncClient`; every method has the same arguments and
    results as its async twin (documented there) and raises the same errors.
    """

    def __init__(
        self, target: str | None = None, *, options: ChannelOptions | None = None, **kwargs: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="sagewire-client"
        )
        self._thread.start()
        self._async = self._run(_make(target, options, kwargs))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run[T](self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: cancel the call too
            raise

    def _iterate[T](self, source: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(_next(source))
                except StopAsyncIteration:
                    return
        finally:
            self._run(_aclose(source))

    def invoke(self, model: str, **kwargs: Any) -> InvokeResult:
        return self._run(self._async.invoke(model, **kwargs))

    def stream(self, model: str, **kwargs: Any) -> Iterator[StreamPart]:
        return self._iterate(self._async.stream(model, **kwargs))

    def submit(self, model: str, **kwargs: Any) -> Job:
        return self._run(self._async.submit(model, **kwargs))

    def upload(self, model: str, source: Any, **kwargs: Any) -> Job:
        return self._run(self._async.upload(model, source, **kwargs))

    def get(self, job_id: str, *, timeout: Timeout = DEFAULT) -> JobResult:
        return self._run(self._async.get(job_id, timeout=timeout))

    def watch(self, job_id: str, *, timeout: Timeout = DEFAULT) -> Iterator[JobEvent]:
        return self._iterate(self._async.watch(job_id, timeout=timeout))

    def wait(self, job_id: str, *, timeout: Timeout = DEFAULT) -> JobResult:
        return self._run(self._async.wait(job_id, timeout=timeout))

    def read_output(self, job_id: str, **kwargs: Any) -> bytes | int:
        return self._run(self._async.read_output(job_id, **kwargs))

    def models(self, *, timeout: Timeout = DEFAULT) -> list[ModelInfo]:
        return self._run(self._async.models(timeout=timeout))

    def model(self, name: str, *, timeout: Timeout = DEFAULT) -> ModelInfo:
        return self._run(self._async.model(name, timeout=timeout))


async def _make(
    target: str | None, options: ChannelOptions | None, kwargs: dict[str, Any]
) -> AsyncClient:
    # grpc.aio binds a channel to the loop it is created on: create it on the client's loop.
    return AsyncClient(target, options=options, **kwargs)


async def _next[T](source: AsyncIterator[T]) -> T:
    return await anext(source)


async def _aclose(source: AsyncIterator[Any]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
