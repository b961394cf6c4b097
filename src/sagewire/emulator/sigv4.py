"""SigV4 verification for the emulator: a request whose signature does not match the configured
credentials is refused as SageMaker refuses it (403 InvalidSignatureException), loudly.

Why: sagewire signs its SageMaker Runtime calls two ways (aioboto3, and the lean path of
sagewire.aws.lean). An emulator that accepted any signature could not tell a broken signer from
a good one. The signature is recomputed with botocore's own signer (botocore.auth.SigV4Auth:
canonical request, string to sign, signing key) over the request as received: the raw path,
the headers the Authorization header names, the body, and the X-Amz-Date it carries.

Also keeps the last requests as received (method, raw path, headers) for the conformance test
(tests/integration/test_lean_conformance.py).
"""

from __future__ import annotations

import hmac
import re
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sagewire.emulator.errors import ApiError

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;.\-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_RECORDED = 64  # requests kept for inspection


@dataclass(frozen=True)
class Received:
    """One request as the emulator received it: method, raw path with query, headers (in
    order), and, when it was verified, the canonical request SigV4 signed."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    canonical_request: str = ""


def _denied(code: str, message: str) -> ApiError:
    return ApiError(403, code, message)


@dataclass
class SigV4Verifier:
    """Checks SigV4 signatures against `credentials` (access key id → secret access key).

    `service` is the signing name SageMaker Runtime uses ("sagemaker")."""

    credentials: dict[str, str]
    service: str = "sagemaker"
    received: deque[Received] = field(default_factory=lambda: deque(maxlen=_RECORDED))

    def verify(self, request: web.BaseRequest, body: bytes) -> None:
        """Raise ApiError 403 unless `request` (with `body`) carries a valid signature; record
        the canonical request it was checked against."""
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            raise _denied("MissingAuthenticationTokenException", "Missing Authentication Token")
        match = _AUTHORIZATION.match(authorization)
        if match is None:
            raise _denied("IncompleteSignatureException", "Authorization header is malformed")
        secret = self.credentials.get(match["key"])
        if secret is None:
            raise _denied(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if match["service"] != self.service:
            raise _denied(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{self.service}'.",
            )
        amz_date = request.headers.get("X-Amz-Date", "")
        if not amz_date.startswith(match["date"]):
            raise _denied(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                "date from HTTP",
            )
        signed = match["signed"].split(";")
        headers = [(name, ",".join(request.headers.getall(name, []))) for name in signed]
        # The request as botocore's signer saw it: the scheme does not enter the canonical
        # request (payloads are signed on plain HTTP and on HTTPS alike for this service).
        recomputed = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            headers=dict(headers),
            data=body,
        )
        recomputed.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(match["key"], secret), self.service, match["region"])
        canonical = signer.canonical_request(recomputed)
        expected = signer.signature(signer.string_to_sign(recomputed, canonical), recomputed)
        if self.received:
            self.received[-1] = _with_canonical(self.received[-1], canonical)
        if not hmac.compare_digest(expected, match["signature"]):
            raise _denied(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )

    def record(self, request: web.BaseRequest) -> None:
        self.received.append(
            Received(
                request.method,
                request.raw_path,
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers),
            )
        )


def _with_canonical(received: Received, canonical: str) -> Received:
    return Received(received.method, received.path, received.headers, canonical)
