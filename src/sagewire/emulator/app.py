"""The aiohttp application: SageMaker Runtime's HTTP surface over the emulated endpoints.

Why: botocore/aioboto3 must not be able to tell the emulator from SageMaker for the calls the
gateway makes, so this module owns the wire details: paths, request headers, response headers,
the body limit, error rendering (via ``errors``) and event-stream framing (via ``eventstream``).
Models stay HTTP-agnostic.

Streams are written frame by frame with chunked transfer encoding, nothing buffered. The server
runs with handler cancellation on, so a client that disconnects cancels its handler even when
nothing is being written (e.g. during a stall); a failed write is caught too. Either way the
model's generator is closed at once and the stream is counted as aborted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from aiohttp import web

from sagewire.emulator import admin, async_invocations, control_plane, errors, eventstream
from sagewire.emulator.endpoints import EmulatorState, Endpoint
from sagewire.emulator.errors import ERROR_TYPE_HEADER, ApiError
from sagewire.emulator.faults import DropConnection, Fault
from sagewire.emulator.model_api import ModelFailure, ModelReply, ModelRequest
from sagewire.emulator.sessions import NEW_SESSION
from sagewire.emulator.sigv4 import SigV4Verifier
from sagewire.emulator.stats import EndpointStats, StreamOutcome

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6_291_456
"""SageMaker's InvokeEndpoint payload limit (6 MiB)."""

STATE = web.AppKey("state", EmulatorState)
# Set: every AWS API request must carry a valid SigV4 signature (sagewire.emulator.sigv4).
SIGV4 = web.AppKey("sigv4", SigV4Verifier)
_REQUEST_ID = web.RequestKey("request_id", str)
_VERIFIED_BODY = web.RequestKey("verified_body", bytes)
_SM = "X-Amzn-SageMaker-"
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"


# -- plumbing: request ids and error rendering -------------------------------------------------


def error_response(err: ApiError) -> web.Response:
    return web.Response(
        status=err.status,
        body=err.body(),
        headers={ERROR_TYPE_HEADER: err.code, "Content-Type": "application/json"},
    )


@web.middleware
async def _render_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[_REQUEST_ID] = str(uuid.uuid4())
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except DropConnection:
        # The injected connection_drop: no answer at all, the client sees the socket close.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never sent: the transport is gone
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(errors.unknown_operation(request.method, request.path))
    except Exception:
        # An emulator or model bug still answers in SageMaker's shape, so botocore maps it.
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(errors.simple_error("internal_failure"))


@web.middleware
async def _verify_sigv4(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With a verifier configured, refuse AWS API requests whose signature does not match."""
    verifier = request.app.get(SIGV4)
    if verifier is None or request.path == "/ping" or request.path.startswith("/_emulator/"):
        return await handler(request)
    verifier.record(request)
    body = await request.read()  # bounded by the app's client_max_size
    verifier.verify(request, body)
    request[_VERIFIED_BODY] = body
    return await handler(request)


async def _add_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["x-amzn-RequestId"] = request.get(_REQUEST_ID) or str(uuid.uuid4())


# -- shared request handling --------------------------------------------------------------------


async def _read_body(request: web.Request) -> bytes:
    """The whole body, or ValidationError past ``MAX_BODY_BYTES`` (after draining the rest so
    the client gets the answer instead of a reset)."""
    if _VERIFIED_BODY in request:  # read whole by the signature check
        verified = request[_VERIFIED_BODY]
        if len(verified) > MAX_BODY_BYTES:
            raise errors.oversize_body(request[_REQUEST_ID])
        return verified
    body = bytearray()
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            body += chunk
    if size > MAX_BODY_BYTES:
        raise errors.oversize_body(request[_REQUEST_ID])
    return bytes(body)


async def _admit(request: web.Request, *, streaming: bool) -> tuple[Endpoint, ModelRequest]:
    """Everything before the model runs: lookup, body, variant, request-level faults."""
    body = await _read_body(request)
    name = request.match_info["endpoint"]
    try:
        endpoint = request.app[STATE].get(name)
    except KeyError:
        raise errors.endpoint_not_found(name) from None
    endpoint.stats.invocations += 1
    try:
        h = request.headers
        session_id = h.get(_SM + "Session-Id")
        if streaming and session_id == "NEW_SESSION":
            raise errors.validation_error(
                "NEW_SESSION is not allowed on InvokeEndpointWithResponseStream; "
                "start the session with InvokeEndpoint."
            )
        if session_id is not None and session_id != NEW_SESSION:
            endpoint.sessions.check(name, session_id)
        call = ModelRequest(
            endpoint=name,
            variant=endpoint.variant(h.get(_SM + "Target-Variant")),
            body=body,
            streaming=streaming,
            content_type=h.get("Content-Type"),
            accept=h.get(_SM + "Accept" if streaming else "Accept"),
            custom_attributes=h.get(_SM + "Custom-Attributes"),
            target_model=h.get(_SM + "Target-Model"),
            target_container_hostname=h.get(_SM + "Target-Container-Hostname"),
            inference_id=h.get(_SM + "Inference-Id"),
            enable_explanations=h.get(_SM + "Enable-Explanations"),
            inference_component=h.get(_SM + "Inference-Component"),
            session_id=session_id,
        )
        await endpoint.active.apply(name, endpoint.stats)
    except ApiError:
        endpoint.stats.errors += 1
        raise
    return endpoint, call


def _failure_error(endpoint: str, failure: ModelFailure) -> ApiError:
    if failure.timed_out:
        return errors.model_timeout(endpoint)
    return errors.model_error(endpoint, failure.status, failure.message)


async def _start_model(endpoint: Endpoint, call: ModelRequest) -> ModelReply:
    try:
        reply = await endpoint.model.invoke(call)
    except ModelFailure as failure:
        endpoint.stats.errors += 1
        raise _failure_error(endpoint.name, failure) from None
    # SageMaker learns sessions from the model's answer headers, as the router does.
    if reply.new_session_id:
        endpoint.sessions.learn(reply.new_session_id)
    if reply.closed_session_id:
        endpoint.sessions.forget(reply.closed_session_id)
    return reply


def _reply_headers(call: ModelRequest, reply: ModelReply) -> dict[str, str]:
    headers = {VARIANT_HEADER: call.variant}
    optional = {
        "Custom-Attributes": reply.custom_attributes,
        "New-Session-Id": reply.new_session_id,
        "Closed-Session-Id": reply.closed_session_id,
    }
    headers.update({_SM + k: v for k, v in optional.items() if v is not None})
    return headers


# -- InvokeEndpoint ------------------------------------------------------------------------------


async def invoke_endpoint(request: web.Request) -> web.Response:
    endpoint = request.app[STATE].endpoints.get(request.match_info["endpoint"])
    stats = endpoint.stats if endpoint is not None else EndpointStats()
    stats.active_invocations += 1
    try:
        return await _invoke_endpoint(request)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client goes away: the model's work stops here.
        stats.invocations_cancelled += 1
        raise
    finally:
        stats.active_invocations -= 1


async def _invoke_endpoint(request: web.Request) -> web.Response:
    endpoint, call = await _admit(request, streaming=False)
    reply = await _start_model(endpoint, call)
    try:
        async with aclosing(reply.chunks) as chunks:
            body = b"".join([chunk async for chunk in chunks])
    except ModelFailure as failure:
        endpoint.stats.errors += 1
        raise _failure_error(endpoint.name, failure) from None
    headers = _reply_headers(call, reply)
    headers["Content-Type"] = reply.content_type
    return web.Response(body=body, headers=headers)


# -- InvokeEndpointWithResponseStream ------------------------------------------------------------


async def invoke_endpoint_with_response_stream(request: web.Request) -> web.StreamResponse:
    endpoint, call = await _admit(request, streaming=True)
    reply = await _start_model(endpoint, call)
    fault, stats = endpoint.fault, endpoint.stats
    headers = _reply_headers(call, reply)
    headers[_SM + "Content-Type"] = reply.content_type
    headers["Content-Type"] = eventstream.CONTENT_TYPE
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    outcome = StreamOutcome.ABORTED  # unless the pump says otherwise
    async with aclosing(reply.chunks) as chunks:
        try:
            await response.prepare(request)
            stats.streams_started += 1
            stats.active_streams += 1
            try:
                outcome = await _pump(request, response, chunks, fault, stats)
            finally:
                stats.finish_stream(outcome)
        except ConnectionError:
            pass  # client went away: counted as aborted; aiohttp finishes quietly
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    fault: Fault,
    stats: EndpointStats,
) -> StreamOutcome:
    """Send the model's chunks as PayloadParts, applying stream faults between parts."""
    sent = 0
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            break
        except ModelFailure as failure:
            code = "ModelInvocationTimeExceeded" if failure.timed_out else "StreamBroken"
            await _end_with(response, eventstream.model_stream_error(failure.message, code))
            return StreamOutcome.FAILED
        except Exception:
            log.exception("model for endpoint %s failed mid-stream", request.match_info["endpoint"])
            await _end_with(response, eventstream.internal_stream_failure("Model stream failed."))
            return StreamOutcome.FAILED
        if not chunk:
            continue
        ending = await _stream_fault(request, response, fault, sent)
        if ending is not None:
            return ending
        if fault.part_delay_ms:
            await asyncio.sleep(fault.part_delay_ms / 1000)
        await response.write(eventstream.payload_part(chunk))
        sent += 1
        stats.stream_parts_sent += 1
    # A configured stream fault fires even when the model produced fewer parts than N.
    ending = await _stream_fault(request, response, fault, sent, at_end=True)
    if ending is not None:
        return ending
    await response.write_eof()
    return StreamOutcome.COMPLETED


async def _end_with(response: web.StreamResponse, frame: bytes) -> None:
    await response.write(frame)
    await response.write_eof()


def _due(after_parts: int | None, sent: int, at_end: bool) -> bool:
    return after_parts is not None and (sent >= after_parts or at_end)


async def _stream_fault(
    request: web.Request,
    response: web.StreamResponse,
    fault: Fault,
    sent: int,
    *,
    at_end: bool = False,
) -> StreamOutcome | None:
    """Apply the stream-ending fault if it is due after ``sent`` parts; else None."""
    if _due(fault.stream_error_after_parts, sent, at_end):
        message = fault.message or "Injected stream error."
        if fault.stream_error == "model_stream_error":
            frame = eventstream.model_stream_error(message, fault.stream_error_code)
        else:
            frame = eventstream.internal_stream_failure(message)
        await _end_with(response, frame)
        return StreamOutcome.FAILED
    if _due(fault.stall_after_parts, sent, at_end):
        await asyncio.Event().wait()  # until the client disconnects (handler cancellation)
    if _due(fault.drop_after_parts, sent, at_end):
        if request.transport is not None:
            request.transport.abort()
        return StreamOutcome.DROPPED
    return None


# -- misc routes -----------------------------------------------------------------------------------


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].all_stats())


def build_app(
    state: EmulatorState,
    s3_endpoint_url: str | None = None,
    sigv4: SigV4Verifier | None = None,
) -> web.Application:
    """The application over ``state``; closing the app closes the state.

    Async invocations read and write S3 at ``s3_endpoint_url`` (None: AWS_ENDPOINT_URL_S3 or
    AWS itself, as any S3 client would). With ``sigv4``, every AWS API request's signature is
    verified (403 InvalidSignatureException when it does not match)."""
    # Bodies are read and bounded by _read_body, so aiohttp's own cap only needs to be higher.
    app = web.Application(
        middlewares=[_render_errors, _verify_sigv4], client_max_size=MAX_BODY_BYTES * 2
    )
    app[STATE] = state
    if sigv4 is not None:
        app[SIGV4] = sigv4
    app.on_response_prepare.append(_add_request_id)

    async def _close(_: web.Application) -> None:
        await state.close()

    app.on_cleanup.append(_close)
    app.router.add_post("/endpoints/{endpoint}/invocations", invoke_endpoint)
    app.router.add_post(
        "/endpoints/{endpoint}/invocations-response-stream", invoke_endpoint_with_response_stream
    )
    async_invocations.install(app, state, s3_endpoint_url)
    app.router.add_post("/", control_plane.describe_endpoint_handler(state))
    app.router.add_get("/ping", ping)
    app.router.add_get("/_emulator/stats", stats)
    admin.install(app, state)
    return app
