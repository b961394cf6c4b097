"""The gateway's own decisions (mode, policy, defaults, limits, timeouts), on a fake port.

The fake stands in for SageMakerRuntimePort only; the real adapter is exercised over the
wire by the integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from sagewire.config.admission import AdmissionSettings
from sagewire.config.async_jobs import AsyncJobSettings
from sagewire.config.settings import (
    OptionName,
    RouteDefaults,
    RouteMode,
    RouteSettings,
    ServerSettings,
    Settings,
    StreamFraming,
)
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.gateway import Gateway
from sagewire.core.types import (
    EndpointRequest,
    InvocationOptions,
    InvokeCall,
    InvokeResult,
    StreamStart,
)


@dataclass
class FakeStream:
    start: StreamStart
    chunks: list[bytes]

    async def parts(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


@dataclass
class FakeRuntime:
    """Records each request; answers after `delay_s`, or raises `error`."""

    delay_s: float = 0.0
    error: Exception | None = None
    chunks: list[bytes] = field(default_factory=list)
    requests: list[EndpointRequest] = field(default_factory=list)

    async def invoke_endpoint(self, request: EndpointRequest) -> InvokeResult:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return InvokeResult(body=request.body, content_type="application/json")

    @asynccontextmanager
    async def invoke_endpoint_stream(self, request: EndpointRequest) -> AsyncIterator[FakeStream]:
        self.requests.append(request)
        yield FakeStream(StreamStart("application/jsonlines", "AllTraffic"), self.chunks)


ROUTES = {
    "echo": RouteSettings(
        endpoint="echo-ep",
        content_type="text/plain",
        accept="application/json",
        allow=[OptionName.CUSTOM_ATTRIBUTES, OptionName.SESSION_ID],
        defaults=RouteDefaults(target_variant="A", custom_attributes="route"),
        timeout_s=5,
        max_concurrency=1,
        admission=AdmissionSettings(max_wait_ms=0),  # shed at once: no race with the first call
    ),
    "tokens": RouteSettings(
        endpoint="tokens-ep",
        mode=RouteMode.STREAM,
        framing=StreamFraming.LINES,
        allow=[OptionName.SESSION_ID],
    ),
    "flexible": RouteSettings(
        endpoint="tokens-ep", mode=RouteMode.STREAM, allow=[OptionName.FRAMING]
    ),
    "batch": RouteSettings.model_validate(
        {"endpoint": "batch-ep", "mode": "async", "async": {"output_prefix": "s3://out/batch/"}}
    ),
    "slow": RouteSettings(endpoint="slow-ep", timeout_s=0.02),
}


def gateway(runtime: FakeRuntime, max_body_bytes: int = 1024) -> Gateway:
    settings = Settings(
        server=ServerSettings(max_body_bytes=max_body_bytes),
        # The async route "batch" needs a job-id key to be valid configuration.
        async_jobs=AsyncJobSettings(
            job_id_keys=[SecretStr("a2V5LWZvci11bml0LXRlc3RzLW9ubHktMzItYnl0ZXM=")]
        ),
        routes=ROUTES,
    )
    return Gateway(settings, runtime)


async def test_invoke_sends_route_endpoint_defaults_and_media_types() -> None:
    runtime = FakeRuntime()
    call = InvokeCall(
        model="echo", body=b"hi", options=InvocationOptions(custom_attributes="caller")
    )
    result = await gateway(runtime).invoke(call)
    assert result.body == b"hi"
    assert runtime.requests == [
        EndpointRequest(
            endpoint="echo-ep",
            body=b"hi",
            content_type="text/plain",
            accept="application/json",
            options=InvocationOptions(custom_attributes="caller", target_variant="A"),
        )
    ]


async def test_caller_media_types_win_over_the_route() -> None:
    runtime = FakeRuntime()
    await gateway(runtime).invoke(
        InvokeCall(model="echo", body=b"x", content_type="text/csv", accept="text/csv")
    )
    assert (runtime.requests[0].content_type, runtime.requests[0].accept) == (
        "text/csv",
        "text/csv",
    )


@pytest.mark.parametrize(
    ("call", "reason", "field"),
    [
        (
            InvokeCall(model="echo", body=b"x", options=InvocationOptions(target_variant="B")),
            "OPTION_NOT_ALLOWED",
            "options.target_variant",
        ),
        (
            InvokeCall(model="echo", body=b"x", options=InvocationOptions(session_id="-bad")),
            "INVALID_ARGUMENT",
            "options.session_id",
        ),
        (InvokeCall(model="echo", body=b"x" * 1025), "PAYLOAD_TOO_LARGE", "body"),
        (InvokeCall(model="echo", body=b"x", accept="é"), "INVALID_ARGUMENT", "accept"),
        (InvokeCall(model="", body=b"x"), "INVALID_ARGUMENT", "model"),
    ],
)
async def test_bad_calls_fail_before_reaching_sagemaker(
    call: InvokeCall, reason: str, field: str
) -> None:
    runtime = FakeRuntime()
    with pytest.raises(SagewireError) as info:
        await gateway(runtime).invoke(call)
    assert (info.value.kind, info.value.reason) == (ErrorKind.INVALID_ARGUMENT, reason)
    assert info.value.violations[0].field == field
    assert runtime.requests == []


async def test_invoke_on_an_async_route_is_wrong_mode() -> None:
    with pytest.raises(SagewireError) as info:
        await gateway(FakeRuntime()).invoke(InvokeCall(model="batch", body=b"x"))
    error = info.value
    assert (error.kind, error.reason) == (ErrorKind.FAILED_PRECONDITION, "WRONG_MODE")
    assert error.message == (
        "Invoke needs a model of mode realtime or stream; model 'batch' has mode async"
    )
    assert error.metadata == {"model": "batch", "mode": "async"}


async def test_route_timeout_becomes_deadline_exceeded_and_frees_the_slot() -> None:
    gw = gateway(FakeRuntime(delay_s=10))
    with pytest.raises(SagewireError) as info:
        await gw.invoke(InvokeCall(model="slow", body=b"x"))
    assert (info.value.kind, info.value.reason) == (
        ErrorKind.DEADLINE_EXCEEDED,
        "DEADLINE_EXCEEDED",
    )
    assert info.value.message == "model 'slow' did not finish within 0.02s"
    assert gw.routes.resolve("slow").in_flight == 0


async def test_caller_deadline_shortens_the_route_timeout() -> None:
    call = InvokeCall(model="echo", body=b"x", time_remaining_s=0.03)
    with pytest.raises(SagewireError, match=r"^model 'echo' did not finish within 0.03s$"):
        await gateway(FakeRuntime(delay_s=10)).invoke(call)


async def test_expired_caller_deadline_times_out_at_once() -> None:
    with pytest.raises(SagewireError, match=r"within 0s$"):
        await gateway(FakeRuntime(delay_s=1)).invoke(
            InvokeCall(model="echo", body=b"x", time_remaining_s=-3)
        )


async def test_concurrency_limit_applies_to_invoke() -> None:
    runtime = FakeRuntime(delay_s=0.05)
    gw = gateway(runtime)
    first = asyncio.create_task(gw.invoke(InvokeCall(model="echo", body=b"1")))
    await asyncio.sleep(0)  # let the first call take the only slot
    with pytest.raises(SagewireError) as info:
        await gw.invoke(InvokeCall(model="echo", body=b"2"))
    assert (info.value.kind, info.value.reason) == (
        ErrorKind.UNAVAILABLE,
        "ROUTE_CONCURRENCY_LIMIT",
    )
    assert (await first).body == b"1"
    assert gw.routes.resolve("echo").in_flight == 0


async def test_failed_upstream_call_frees_the_slot() -> None:
    gw = gateway(FakeRuntime(error=SagewireError("down", ErrorKind.UNAVAILABLE)))
    with pytest.raises(SagewireError, match="down"):
        await gw.invoke(InvokeCall(model="echo", body=b"x"))
    assert gw.routes.resolve("echo").in_flight == 0


async def test_stream_reframes_lines_by_route_default() -> None:
    gw = gateway(FakeRuntime(chunks=[b'{"a"', b":1}\n{", b'"b":2}\n']))
    async with gw.open_stream(InvokeCall(model="tokens", body=b"x")) as stream:
        assert stream.framing is StreamFraming.LINES
        assert stream.start.content_type == "application/jsonlines"
        pieces = [p async for p in stream.pieces]
    assert pieces == [b'{"a":1}\n', b'{"b":2}\n']


async def test_stream_caller_framing_when_the_route_allows_it() -> None:
    gw = gateway(FakeRuntime(chunks=[b"a\nb", b"\n"]))
    call = InvokeCall(model="flexible", body=b"x", framing=StreamFraming.LINES)
    async with gw.open_stream(call) as stream:
        assert [p async for p in stream.pieces] == [b"a\n", b"b\n"]


@pytest.mark.parametrize(
    ("call", "kind", "reason", "field"),
    [
        (
            InvokeCall(model="tokens", body=b"x", framing=StreamFraming.RAW),
            ErrorKind.INVALID_ARGUMENT,
            "OPTION_NOT_ALLOWED",
            "framing",
        ),
        (
            InvokeCall(
                model="tokens", body=b"x", options=InvocationOptions(session_id="NEW_SESSION")
            ),
            ErrorKind.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "options.session_id",
        ),
        (InvokeCall(model="echo", body=b"x"), ErrorKind.FAILED_PRECONDITION, "WRONG_MODE", None),
    ],
)
async def test_stream_rejections_happen_before_sagemaker(
    call: InvokeCall, kind: ErrorKind, reason: str, field: str | None
) -> None:
    runtime = FakeRuntime()
    with pytest.raises(SagewireError) as info:
        async with gateway(runtime).open_stream(call):
            pass
    assert (info.value.kind, info.value.reason) == (kind, reason)
    assert [v.field for v in info.value.violations] == ([field] if field else [])
    assert runtime.requests == []


def test_list_and_get_model() -> None:
    gw = gateway(FakeRuntime())
    assert [m.name for m in gw.list_models()] == ["batch", "echo", "flexible", "slow", "tokens"]
    assert gw.get_model("tokens").framing is StreamFraming.LINES
    with pytest.raises(SagewireError, match="unknown model 'nope'"):
        gw.get_model("nope")
