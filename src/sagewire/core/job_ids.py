"""Job ids: self-describing, authenticated handles of async jobs. Pure: no I/O.

    swj1.<payload>.<tag>

`payload` is unpadded base64url of compact JSON holding everything any replica needs to answer
for the job (route, endpoint, inference id, output and failure locations, submit time and result
deadline); `tag` is unpadded base64url of HMAC-SHA256(key, "swj1." + payload). The first
configured key signs; every key verifies, so a key can be rotated in without breaking ids
already handed out (docs/async.md).

Why HMAC and not encryption: the point is that a caller cannot forge or alter an id to make
sagewire read other S3 objects; the contents (S3 locations of the caller's own job) are not
secret from the caller. Every check here happens before any S3 call, and failures say nothing
about which part was wrong.

An id is accepted only in the one form `encode` writes: base64url without padding whose unused
trailing bits are zero, so padding variants and the standard alphabet's `+`/`/` are refused
rather than read as the same id. Every field is checked after the tag (names, an `s3://` output
location, a failure location that is `s3://` or empty, times within 0..MAX_TIMESTAMP), so an id
signed by any key holder with odd contents is JOB_ID_MALFORMED, never an internal error. A
signed id is still not trusted to name what it likes: `core.job_scope` checks its route,
endpoint and locations against the configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sagewire.config.sagemaker_fields import option_problem
from sagewire.config.settings import EndpointName, ModelName
from sagewire.core.async_types import S3Location
from sagewire.core.errors import ErrorKind, SagewireError, invalid_argument

PREFIX = "swj1"
MAX_JOB_ID_CHARS = 4096
_TAG_BYTES = 32
# 9999-12-31T23:59:59Z: the last second datetime (and protobuf's Timestamp) can hold.
MAX_TIMESTAMP = 253_402_300_799
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_FIELDS = {
    "m": "model",
    "e": "endpoint",
    "i": "inference_id",
    "o": "output_location",
    "f": "failure_location",
    "s": "submitted_at",
    "x": "expires_at",
}
# The submitter's binding (sagewire.security.guard.owner_binding): written only when
# authentication is on, so ids of servers without it keep their form.
_OWNER = "b"
_OWNER_TEXT = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class JobToken:
    """What a job id says about its job. Times are Unix seconds."""

    model: str
    endpoint: str
    inference_id: str
    output_location: str
    failure_location: str
    submitted_at: int
    # The result deadline: no output or failure by then means the job expired.
    expires_at: int
    # Who may read the job: a digest of the submitting principal; "" without authentication.
    owner: str = ""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """The bytes of canonical unpadded base64url `text`; ValueError for any other form."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:  # nonzero unused bits: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def _malformed() -> SagewireError:
    return invalid_argument(
        "job_id",
        "is not a sagewire job id; pass the job_id exactly as SubmitAsync or UploadAsync "
        "returned it",
        reason="JOB_ID_MALFORMED",
    )


def _unverified() -> SagewireError:
    return invalid_argument(
        "job_id",
        "failed verification: it was altered, issued by another sagewire deployment, or "
        "signed with a key that has since been retired",
        reason="JOB_ID_INVALID",
    )


def _expired(until: int) -> SagewireError:
    when = datetime.fromtimestamp(until, UTC).isoformat()
    return SagewireError(
        message=f"job_id expired: its job was answered until {when}; submit the job again",
        kind=ErrorKind.NOT_FOUND,
        reason="JOB_ID_EXPIRED",
    )


class JobIdCodec:
    """Issues and verifies job ids with `keys` (first signs, all verify).

    `retention_s` is how long after its result deadline an id is still honoured; after that
    it is rejected as expired without touching S3.
    """

    def __init__(self, keys: Sequence[bytes], retention_s: int) -> None:
        if not keys:
            raise ValueError("a job-id codec needs at least one key")
        self._keys = list(keys)
        self._retention_s = retention_s

    def _tag(self, key: bytes, payload: str) -> bytes:
        return hmac.new(key, f"{PREFIX}.{payload}".encode("ascii"), hashlib.sha256).digest()

    def encode(self, token: JobToken) -> str:
        doc: dict[str, object] = {short: getattr(token, name) for short, name in _FIELDS.items()}
        if token.owner:
            doc[_OWNER] = token.owner
        payload = _b64encode(json.dumps(doc, separators=(",", ":")).encode())
        return f"{PREFIX}.{payload}.{_b64encode(self._tag(self._keys[0], payload))}"

    def decode(self, job_id: str, now: float) -> JobToken:
        """The token inside `job_id`, or INVALID_ARGUMENT / NOT_FOUND (expired)."""
        if not job_id:
            raise invalid_argument(
                "job_id", "is required: the job_id SubmitAsync or UploadAsync returned"
            )
        parts = job_id.split(".")
        if len(job_id) > MAX_JOB_ID_CHARS or len(parts) != 3 or parts[0] != PREFIX:
            raise _malformed()
        if not _BASE64URL.fullmatch(parts[1]):  # ASCII only from here on
            raise _malformed()
        _, payload, tag_text = parts
        try:
            tag = _b64decode(tag_text)
        except (binascii.Error, ValueError):
            raise _malformed() from None
        if len(tag) != _TAG_BYTES:
            raise _malformed()
        # Every key is tried (no early exit on a match) so timing says nothing about which.
        verified = False
        for key in self._keys:
            verified |= hmac.compare_digest(self._tag(key, payload), tag)
        if not verified:
            raise _unverified()
        token = self._parse(payload)
        if now > token.expires_at + self._retention_s:
            raise _expired(token.expires_at + self._retention_s)
        return token

    @staticmethod
    def _parse(payload: str) -> JobToken:
        try:
            doc: Any = json.loads(_b64decode(payload))
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise _malformed() from None
        # Exactly the fields encode writes: all of _FIELDS, the owner binding only when set.
        if not isinstance(doc, dict) or set(doc) - {_OWNER} != set(_FIELDS):
            raise _malformed()
        values = {name: doc[short] for short, name in _FIELDS.items()}
        if not _valid(values):
            raise _malformed()
        owner = doc.get(_OWNER, "")
        if owner and not (isinstance(owner, str) and _OWNER_TEXT.fullmatch(owner)):
            raise _malformed()
        return JobToken(**values, owner=owner)


_MODEL = TypeAdapter(ModelName)
_ENDPOINT = TypeAdapter(EndpointName)


def _valid(values: dict[str, Any]) -> bool:
    """Every field as `encode` writes it for a job sagewire accepted."""
    texts = ("model", "endpoint", "inference_id", "output_location", "failure_location")
    if not all(isinstance(values[name], str) for name in texts):
        return False
    times = (values["submitted_at"], values["expires_at"])
    if not all(type(t) is int and 0 <= t <= MAX_TIMESTAMP for t in times):  # no bools
        return False
    try:
        _MODEL.validate_python(values["model"])
        _ENDPOINT.validate_python(values["endpoint"])
    except ValidationError:
        return False
    inference_id = values["inference_id"]
    if not inference_id or option_problem("inference_id", inference_id) is not None:
        return False
    failure = values["failure_location"]
    return readable_location(values["output_location"]) and (
        not failure or readable_location(failure)
    )


def readable_location(uri: str) -> bool:
    """An `s3://bucket/key` whose key has no `.` or `..` segment (an HTTP layer could fold
    those into another key)."""
    location = S3Location.parse(uri)
    return location is not None and not {".", ".."} & set(location.key.split("/"))
