"""Settings of async inference (`[async_jobs]` and `[routes.<name>.async]`); docs/async.md.

Job-id keys are secrets: they are held as SecretStr so no repr, log line or config error ever
shows them, and they are checked (base64, at least 32 bytes) when the configuration loads.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from sagewire.config.base import Strict

MIN_KEY_BYTES = 32
# The job-id key published in config/local.toml for `sagewire local`: anyone can forge ids with
# it, so `sagewire serve` refuses it (compared as bytes, so every base64 spelling is caught).
DEVELOPMENT_KEY = "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1pbi1wcm9kdWN0aW9uISE="
# SageMaker's ranges for InvokeEndpointAsync (botocore's service model).
REQUEST_TTL_RANGE = (60, 21_600)
INVOCATION_TIMEOUT_RANGE = (1, 3_600)
# S3's multipart minimum part size (all parts but the last) and its 5 GiB part maximum.
MIN_PART_BYTES = 5 * 1024 * 1024
# SageMaker async inference accepts inputs of up to 1 GB.
MAX_INPUT_BYTES = 1024**3

_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_S3_PREFIX = re.compile(rf"^s3://{_BUCKET}/(\S*/)?$")


def decode_key(value: str) -> bytes:
    """A job-id key from its configured text: standard or URL-safe base64, padding optional."""
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def _check_key(value: SecretStr) -> SecretStr:
    # The message never includes the value: config errors are printed and logged.
    raw = decode_key(value.get_secret_value())
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(
            f"decodes to {len(raw)} bytes; a job-id key needs at least {MIN_KEY_BYTES} random "
            "bytes (e.g. `openssl rand -base64 32`)"
        )
    return value


def _check_prefix(value: str) -> str:
    if not _S3_PREFIX.match(value):
        raise ValueError(
            f"{value!r} must be s3://<bucket>/ or s3://<bucket>/<prefix>/ (ending in '/', so a "
            "prefix can never match a sibling such as <prefix>-other/)"
        )
    return value


def _check_result_prefix(value: str) -> str:
    return _check_prefix(value) if value else value


def _check_staging_prefix(value: str) -> str:
    if value and (value.startswith("/") or not value.endswith("/")):
        raise ValueError("must be empty or a key prefix such as 'sagewire/async-inputs/'")
    return value


JobIdKey = Annotated[SecretStr, AfterValidator(_check_key)]
S3Prefix = Annotated[str, AfterValidator(_check_prefix)]
BucketName = Annotated[str, Field(pattern=rf"^({_BUCKET})?$")]
StagingPrefix = Annotated[str, AfterValidator(_check_staging_prefix)]
ResultPrefix = Annotated[str, AfterValidator(_check_result_prefix)]


class AsyncJobSettings(Strict):
    """Process-wide async settings: job-id keys, staging, result delivery, watching."""

    # First key signs new job ids; every key verifies. Rotate by prepending a new key.
    job_id_keys: list[JobIdKey] = Field(default_factory=list)
    # How long after its result deadline a job id is still honoured.
    job_id_retention_s: int = Field(default=7 * 86_400, ge=0, le=365 * 86_400)
    staging_bucket: BucketName = ""
    staging_prefix: StagingPrefix = "sagewire/async-inputs/"
    inline_output_bytes: int = Field(default=1024 * 1024, ge=0, le=32 * 1024 * 1024)
    read_chunk_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    upload_part_bytes: int = Field(default=8 * 1024 * 1024, ge=MIN_PART_BYTES, le=512 * 1024**2)
    max_input_bytes: int = Field(default=MAX_INPUT_BYTES, ge=1, le=MAX_INPUT_BYTES)
    upload_idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    watch_poll_initial_s: float = Field(default=1.0, gt=0, le=300)
    watch_poll_max_s: float = Field(default=30.0, gt=0, le=3600)
    max_open_streams: int = Field(default=1024, ge=1, le=100_000)

    def keys(self) -> list[bytes]:
        return [decode_key(key.get_secret_value()) for key in self.job_id_keys]

    def published_keys(self) -> list[int]:
        """Indexes in job_id_keys of the published development key (DEVELOPMENT_KEY)."""
        published = decode_key(DEVELOPMENT_KEY)
        return [at for at, key in enumerate(self.keys()) if key == published]


class AsyncRouteSettings(Strict):
    """Async options of one route."""

    # Override [async_jobs] staging for this route ("" = the global value).
    staging_bucket: BucketName = ""
    staging_prefix: StagingPrefix | None = None
    # Where the endpoint's AsyncInferenceConfig puts results: its S3OutputPath and S3FailurePath,
    # each as an s3:// prefix ending in '/'. Required for mode async (the failure prefix only
    # when the endpoint has an S3FailurePath): a job id naming a location outside them is
    # refused, so a signed id can never read another S3 object through sagewire.
    output_prefix: ResultPrefix = ""
    failure_prefix: ResultPrefix = ""
    # Existing s3:// inputs callers may name; empty allows none.
    allowed_input_prefixes: list[S3Prefix] = Field(default_factory=list)
    request_ttl_seconds: int = Field(
        default=REQUEST_TTL_RANGE[1], ge=REQUEST_TTL_RANGE[0], le=REQUEST_TTL_RANGE[1]
    )
    invocation_timeout_seconds: int = Field(
        default=900, ge=INVOCATION_TIMEOUT_RANGE[0], le=INVOCATION_TIMEOUT_RANGE[1]
    )
