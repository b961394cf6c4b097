"""The lean SageMaker Runtime path (aws.client = "lean"): InvokeEndpoint and
InvokeEndpointWithResponseStream sent without botocore's client machinery.

Why our own code: an aiobotocore API call spends most of its CPU on what sagewire does not need
per call (parameter validation, some thirty event emissions, endpoint-ruleset resolution,
user-agent rebuilding, shape-driven parsing of a response that is two headers and a body); the
prototype measured ~390 µs of client CPU per InvokeEndpoint against ~860 µs (issue 15). What
decides what goes on the wire, and what an answer means, stays botocore's own:
- the request: botocore's `prepare_request_dict` (its URL kept per endpoint), the header
  names of the service model's input shapes in botocore's order, the same fixed User-Agent,
  `amz-sdk-*` headers as botocore's `add_retry_headers` writes them, signed as
  `botocore.auth.SigV4Auth` signs (sagewire.aws.sigv4: the same canonical request at a fifth
  of the cost) with credentials from the provider chain (aiobotocore's async port of
  botocore's, with its refresh), frozen per attempt;
- the endpoint: resolved once at start-up by the aiobotocore client kept for the other
  operations (aws.runtime_endpoint_url, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, else the region's);
- HTTP: InvokeEndpoint on a keep-alive HTTP/1.1 pool of our own (sagewire.aws.lean_http1),
  response streams on one pooled aiohttp session set up as aiobotocore sets up its own, both
  raising the same botocore exceptions (sagewire.aws.lean_http);
- errors: botocore's rest-json parser and the modelled error fields → ClientError, mapped by
  sagewire.aws.errors like every other call;
- retries: botocore's standard RetryHandler with sagewire's ResendChecker and a standard retry
  quota (sagewire.aws.retries): one budget, the same rule.
tests/integration/test_lean_conformance.py shows the requests equal botocore's on the wire.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, NamedTuple

from botocore.awsrequest import AWSResponse, prepare_request_dict
from botocore.endpoint import Endpoint
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.model import OperationModel, ServiceModel
from botocore.parsers import RestJSONParser
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import RetryHandler, RetryQuotaChecker
from botocore.utils import percent_encode

from sagewire.aws.client import USER_AGENT
from sagewire.aws.error_table import Service
from sagewire.aws.errors import AWS_FAILURES
from sagewire.aws.instrumented import ObservedCalls
from sagewire.aws.lean_http import LeanHttp
from sagewire.aws.retries import resend_handler
from sagewire.aws.sigv4 import Signer, payload_hash
from sagewire.config.settings import AwsSettings

INVOKE = "InvokeEndpoint"
INVOKE_STREAM = "InvokeEndpointWithResponseStream"
# Request URLs kept per (operation, endpoint): routes name a handful of endpoints.
_URLS_KEPT = 1024


def invocation_id() -> str:
    """A random (version 4) UUID written as botocore's `str(uuid.uuid4())` writes it (the
    `amz-sdk-invocation-id` of one API call), at ~40 % of its cost: uuid.UUID's constructor
    checks and converts what is right by construction here."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Ttl:
    """botocore's Endpoint TTL arithmetic (the `ttl=` of amz-sdk-request on a resend), borrowed
    without an Endpoint."""

    _calculate_ttl = Endpoint._calculate_ttl
    _set_ttl = Endpoint._set_ttl


@dataclass(frozen=True)
class _Operation:
    model: OperationModel
    path: str  # the request URI after the endpoint name, e.g. "/invocations"
    headers: dict[str, str]  # botocore parameter → HTTP header (the input shape's locations)
    outputs: dict[str, str]  # output member → lower-case response header


def _operation(service: ServiceModel, name: str) -> _Operation:
    model = service.operation_model(name)
    uri = str(model.http["requestUri"])
    prefix = "/endpoints/{EndpointName}"
    if not uri.startswith(prefix):  # the model changed under us: refuse to guess
        raise RuntimeError(f"{name}: unexpected request URI {uri!r}")
    headers = {
        member: str(shape.serialization["name"])
        for member, shape in model.input_shape.members.items()
        if shape.serialization.get("location") == "header"
    }
    outputs = {
        member: str(shape.serialization["name"]).lower()
        for member, shape in model.output_shape.members.items()
        if shape.serialization.get("location") == "header"
    }
    return _Operation(model, uri[len(prefix) :], headers, outputs)


@dataclass
class Answer:
    """A 2xx answer: the HTTP response (body not read yet: a lean_http1 Reply, or for a stream
    an aiohttp ClientResponse), its headers (case-insensitive), and how many sends it took."""

    raw: Any
    headers: Mapping[str, str]
    sends: int

    def metadata(self) -> dict[str, Any]:
        """botocore's ResponseMetadata of this answer (what the CLIENT span reads)."""
        return {
            "ResponseMetadata": {
                "HTTPStatusCode": self.raw.status,
                "RequestId": self.headers.get("x-amzn-requestid", ""),
            }
        }


class _Status(NamedTuple):
    """The part of an HTTP response botocore's RetryQuotaChecker.release_retry_quota reads."""

    status_code: int


class CallFailed(Exception):
    """A failed call: `error` is what botocore's client would have raised (a ClientError or a
    botocore/aiohttp exception); `sends` counts the attempts."""

    def __init__(self, error: BaseException, sends: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.sends = sends


class LeanSender:
    """Builds, signs and sends the two operations, resending only what ResendChecker allows.

    `credentials`: an aiobotocore credentials object (`await get_frozen_credentials()`) or None;
    `http`: an entered LeanHttp.
    """

    def __init__(
        self,
        service: ServiceModel,
        endpoint_url: str,
        region: str,
        user_agent: str,
        credentials: Any,
        http: LeanHttp,
        retries: RetryHandler,
        quota: RetryQuotaChecker,
        read_timeout_s: float,
    ) -> None:
        self._operations = {name: _operation(service, name) for name in (INVOKE, INVOKE_STREAM)}
        self._endpoint_url = endpoint_url
        self._signer = Signer(str(service.signing_name), region)
        self._user_agent = user_agent
        self._host = endpoint_url.split("://", 1)[1].split("/", 1)[0]
        self._credentials = credentials
        self._http = http
        self._retries = retries
        self._quota = quota
        self._read_timeout_s = read_timeout_s
        self._parser = RestJSONParser()
        self._urls: dict[tuple[str, str], str] = {}

    def outputs(self, operation: str, headers: Mapping[str, str]) -> dict[str, str]:
        """The output members carried in response headers, by botocore's member names
        (ContentType, InvokedProductionVariant, ...), as botocore's parser returns them."""
        return {
            member: headers[header]
            for member, header in self._operations[operation].outputs.items()
            if header in headers
        }

    def request(
        self, operation: str, params: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """botocore's request dict for `params` (botocore's parameter names, in the order
        botocore's serializer would see them)."""
        spec = self._operations[operation]
        headers: dict[str, Any] = {}
        for name, value in params.items():
            header = spec.headers.get(name)
            if header is not None:
                headers[header] = value
        # What prepare_request_dict adds: the User-Agent, then the URL (kept per endpoint).
        headers["User-Agent"] = self._user_agent
        headers["host"] = self._host
        body = params.get("Body", b"")
        return {
            "url": self._url(spec, params["EndpointName"]),
            "method": "POST",
            "headers": headers,
            "body": body if isinstance(body, bytes) else bytes(body),
            "context": context,
        }

    def _url(self, spec: _Operation, endpoint_name: str) -> str:
        """The operation's URL for an endpoint, as botocore's `prepare_request_dict` joins it,
        computed once per (operation, endpoint) (at most _URLS_KEPT kept)."""
        key = (spec.model.name, endpoint_name)
        url = self._urls.get(key)
        if url is None:
            request_dict: dict[str, Any] = {
                "url_path": f"/endpoints/{percent_encode(endpoint_name)}{spec.path}",
                "query_string": "",
                "headers": {},
            }
            prepare_request_dict(request_dict, self._endpoint_url)
            url = str(request_dict["url"])
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()
            self._urls[key] = url
        return url

    async def _signed(self, request_dict: dict[str, Any], body_hash: str) -> dict[str, str]:
        """The headers of one attempt: signed as botocore's SigV4Auth signs (sagewire.aws.sigv4,
        on a fresh copy of the headers, as botocore's endpoint creates a new request per
        attempt), then the unsigned amz-sdk-* headers and Content-Length as botocore adds them."""
        context = request_dict["context"]
        frozen = None
        if self._credentials is not None:
            frozen = await self._credentials.get_frozen_credentials()
        if frozen is None or frozen.access_key is None:
            raise NoCredentialsError()
        headers = dict(request_dict["headers"])
        self._signer.sign(
            headers,
            request_dict["url"],
            request_dict["body"],
            frozen.access_key,
            frozen.secret_key,
            frozen.token,
            body_hash=body_hash,
        )
        # botocore.handlers.add_retry_headers (after signing, as in botocore: not signed).
        retries = context["retries"]
        headers["amz-sdk-invocation-id"] = retries["invocation-id"]
        headers["amz-sdk-request"] = "; ".join(
            f"{key}={retries[key]}" for key in ("ttl", "attempt", "max") if key in retries
        )
        # botocore's AWSPreparedRequest, then aiobotocore: a POST states its length.
        headers["Content-Length"] = str(len(request_dict["body"]))
        headers["Accept-Encoding"] = "identity"
        return headers

    async def send(self, operation: str, params: dict[str, Any]) -> Answer:
        """Send until a 2xx answer or a failure ResendChecker will not resend (CallFailed)."""
        spec = self._operations[operation]
        context: dict[str, Any] = {"retries": {"attempt": 1, "invocation-id": invocation_id()}}
        request_dict = self.request(operation, params, context)
        body_hash = payload_hash(request_dict["body"])  # every attempt sends the same body
        attempts = 1
        while True:
            http: Any = None
            parsed: dict[str, Any] | None = None
            caught: BaseException | None = None
            try:
                raw = await self._http.post(
                    request_dict["url"],
                    await self._signed(request_dict, body_hash),
                    request_dict["body"],
                    stream=operation == INVOKE_STREAM,
                )
                if raw.status < 300:
                    self._quota.release_retry_quota(context, _Status(raw.status))
                    return Answer(raw, raw.headers, attempts)
                http, parsed = await self._error(spec, raw)
            except AWS_FAILURES as exc:
                caught = exc
            delay = self._retries.needs_retry(
                response=None if http is None else (http, parsed),
                attempts=attempts,
                caught_exception=caught,
                request_dict=request_dict,
                operation=spec.model,
            )
            if delay is None:
                if caught is not None:
                    raise CallFailed(caught, attempts)
                raise CallFailed(ClientError(parsed or {}, spec.model.name), attempts)
            await asyncio.sleep(delay)
            attempts += 1
            retries = context["retries"]
            retries["attempt"] = attempts
            if http is not None:
                _Ttl()._set_ttl(retries, self._read_timeout_s, (http, parsed))

    async def _error(self, spec: _Operation, raw: Any) -> tuple[AWSResponse, dict[str, Any]]:
        """An error answer as botocore's client sees it (aiobotocore's lower-case header dict,
        the whole body read; a failure reading it is raised as aiohttp raised it), parsed as
        botocore parses it: the code and message, then the modelled fields of its error shape
        (ModelError's OriginalStatusCode, ...)."""
        headers = {k.decode("utf-8").lower(): v.decode("utf-8") for k, v in raw.raw_headers}
        http = AWSResponse(str(raw.url), raw.status, headers, raw)
        response = {
            "headers": http.headers,
            "status_code": raw.status,
            "body": await raw.read(),
            "context": {"operation_name": spec.model.name},
        }
        parsed: dict[str, Any] = self._parser.parse(response, spec.model.output_shape)
        code = parsed.get("Error", {}).get("Code")
        shape = spec.model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:
            parsed.update(self._parser.parse(response, shape))
        return http, parsed


async def open_lean(
    stack: AsyncExitStack, settings: AwsSettings, meta: Any, session: Any, budget: RetryQuota
) -> tuple[LeanSender, ObservedCalls]:
    """The lean sender and its observation, for the aiobotocore client whose `meta` (service
    model, resolved endpoint URL and region) and botocore `session` (credential chain,
    User-Agent extra) it shares; `budget`: the retry quota both paths draw from. The HTTP pool
    closes with `stack`."""
    http = await stack.enter_async_context(
        LeanHttp(
            str(meta.endpoint_url),
            settings.max_pool_connections,
            settings.connect_timeout_s,
            settings.read_timeout_s,
        )
    )
    # botocore's legacy User-Agent when Config.user_agent is set: it, then the session's extra.
    user_agent = " ".join(part for part in (USER_AGENT, session.user_agent_extra) if part)
    handler, checker = resend_handler(Service.RUNTIME, settings.max_attempts, budget)
    sender = LeanSender(
        meta.service_model,
        str(meta.endpoint_url),
        str(meta.region_name),
        user_agent,
        await session.get_credentials(),
        http,
        handler,
        checker,
        settings.read_timeout_s,
    )
    observed = ObservedCalls(
        "sagemaker-runtime",
        str(meta.service_model.service_id),
        str(meta.region_name or ""),
        str(meta.endpoint_url),
        budget,
    )
    return sender, observed
