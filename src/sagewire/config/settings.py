"""The configuration schema. Every field is documented in docs/configuration.md.

Unknown keys are rejected (extra="forbid") so a typo fails start-up instead of being ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sagewire.config.admission import AdmissionSettings
from sagewire.config.async_jobs import AsyncJobSettings, AsyncRouteSettings
from sagewire.config.base import Strict
from sagewire.config.bidi import BidiRouteSettings
from sagewire.config.converse import ConverseSettings
from sagewire.config.operations import MODE_OPERATION, takes, unsupported
from sagewire.config.resilience import (
    CircuitBreakerSettings,
    ColdStartSettings,
    FallbackSettings,
)
from sagewire.config.rest import RestSettings
from sagewire.config.sagemaker_fields import media_type_problem, option_problem
from sagewire.config.security import AuthSettings, QuotaSettings, TlsSettings, check_callers

SAGEMAKER_MAX_BODY_BYTES = 6_291_456
# SageMaker gives a real-time model 60 s; a little margin lets its own timeout error arrive.
REALTIME_TIMEOUT_CAP_S = 70.0

_HOST_PORT = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$"
EndpointName = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class RouteMode(StrEnum):
    """Which SageMaker operation a route uses."""

    REALTIME = "realtime"
    STREAM = "stream"
    ASYNC = "async"
    BIDI = "bidi"


class StreamFraming(StrEnum):
    """How streamed bytes become messages (see docs/streaming.md)."""

    RAW = "raw"
    LINES = "lines"
    SSE = "sse"

    @property
    def records(self) -> bool:
        """Each message is one record (a line, an event) that may be JSON."""
        return self is not StreamFraming.RAW


class OptionName(StrEnum):
    """Per-call options a route may let callers set (InvocationOptions field names)."""

    CUSTOM_ATTRIBUTES = "custom_attributes"
    TARGET_VARIANT = "target_variant"
    TARGET_MODEL = "target_model"
    INFERENCE_COMPONENT = "inference_component"
    TARGET_CONTAINER_HOSTNAME = "target_container_hostname"
    INFERENCE_ID = "inference_id"
    SESSION_ID = "session_id"
    ENABLE_EXPLANATIONS = "enable_explanations"
    FRAMING = "framing"
    # Async routes: InvokeEndpointAsync's RequestTTLSeconds / InvocationTimeoutSeconds.
    REQUEST_TTL_SECONDS = "request_ttl_seconds"
    INVOCATION_TIMEOUT_SECONDS = "invocation_timeout_seconds"


class RouteDefaults(Strict):
    """SageMaker options applied to every call on a route unless the caller overrides them."""

    custom_attributes: str = ""
    target_variant: str = ""
    target_model: str = ""
    inference_component: str = ""
    target_container_hostname: str = ""
    enable_explanations: str = ""

    @field_validator("*")
    @classmethod
    def _as_sagemaker_accepts(cls, value: str, info: ValidationInfo) -> str:
        if value:
            problem = option_problem(str(info.field_name), value)
            if problem is not None:
                raise ValueError(problem)
        return value


class RouteSettings(Strict):
    """A logical model name → one SageMaker endpoint and how to call it."""

    endpoint: EndpointName
    mode: RouteMode = RouteMode.REALTIME
    description: str = ""
    content_type: str = "application/json"
    accept: str = ""
    framing: StreamFraming = StreamFraming.RAW
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_concurrency: int = Field(default=64, ge=1, le=100_000)
    # Waiting for a slot, shedding, and the adaptive limit under max_concurrency.
    admission: AdmissionSettings = AdmissionSettings()
    defaults: RouteDefaults = RouteDefaults()
    allow: list[OptionName] = Field(default_factory=list)
    converse: ConverseSettings = ConverseSettings()
    bidi: BidiRouteSettings = BidiRouteSettings()
    # `async` is a Python keyword: the TOML table is [routes.<name>.async].
    async_: AsyncRouteSettings = Field(default=AsyncRouteSettings(), alias="async")
    # Who may call this route once [auth] is on (default-deny); see docs/security.md.
    callers: list[str] = Field(default_factory=list)
    # Resilience (docs/resilience.md): realtime and stream routes.
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    cold_start: ColdStartSettings = ColdStartSettings()
    # Endpoints tried in order when this one fails retryably or its circuit is open.
    fallbacks: list[FallbackSettings] = Field(default_factory=list, max_length=8)

    @field_validator("callers")
    @classmethod
    def _callers(cls, callers: list[str]) -> list[str]:
        return check_callers(callers)

    @field_validator("defaults")
    @classmethod
    def _defaults_fit_the_operation(
        cls, defaults: RouteDefaults, info: ValidationInfo
    ) -> RouteDefaults:
        mode = info.data.get("mode")
        if mode is not None:
            operation = MODE_OPERATION[mode.value]
            set_names = [name for name, value in defaults.model_dump().items() if value]
            bad = unsupported(operation, set_names)
            if bad:
                raise ValueError(
                    f"{bad[0]}: mode {mode.value} calls {operation}, which takes no such "
                    f"option (it takes {takes(operation)}); remove it"
                )
        return defaults

    @field_validator("allow")
    @classmethod
    def _allowed_options_fit_the_operation(
        cls, allow: list[OptionName], info: ValidationInfo
    ) -> list[OptionName]:
        mode = info.data.get("mode")
        if mode is not None:
            operation = MODE_OPERATION[mode.value]
            bad = unsupported(operation, [name.value for name in allow])
            if bad:
                raise ValueError(
                    f"{bad[0]!r}: mode {mode.value} calls {operation}, which takes no such "
                    f"option (it takes {takes(operation)}); remove it"
                )
        return allow

    @field_validator("content_type", "accept")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        problem = media_type_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _realtime_timeout(self) -> RouteSettings:
        if self.mode is RouteMode.REALTIME and self.timeout_s > REALTIME_TIMEOUT_CAP_S:
            raise ValueError(
                f"timeout_s={self.timeout_s:g} exceeds {REALTIME_TIMEOUT_CAP_S:g}s: SageMaker "
                "stops real-time invocations after 60s"
            )
        return self

    @model_validator(mode="after")
    def _async_names_its_results(self) -> RouteSettings:
        if self.mode is RouteMode.ASYNC and not self.async_.output_prefix:
            raise ValueError(
                "mode async needs async.output_prefix: the S3OutputPath of the endpoint's "
                "AsyncInferenceConfig as s3://<bucket>/<prefix>/ (and async.failure_prefix for "
                "its S3FailurePath); job ids naming other locations are refused"
            )
        return self

    @model_validator(mode="after")
    def _fallbacks_fit(self) -> RouteSettings:
        if self.fallbacks and self.mode not in (RouteMode.REALTIME, RouteMode.STREAM):
            raise ValueError(
                f"fallbacks apply to modes realtime and stream only, not {self.mode.value}"
            )
        targets = [(self.endpoint, self.defaults.target_variant)]
        targets += [(f.endpoint, f.target_variant) for f in self.fallbacks]
        if len(set(targets)) != len(targets):
            raise ValueError(
                "each fallback must differ from the route's endpoint and the other fallbacks "
                "(in endpoint or target_variant)"
            )
        return self

    @model_validator(mode="after")
    def _bidi_has_no_sessions(self) -> RouteSettings:
        if self.mode is RouteMode.BIDI and self.converse.sessions:
            raise ValueError(
                "converse.sessions does not apply to mode bidi: one bidirectional stream "
                "already keeps the whole Converse on one model instance"
            )
        return self


class ServerSettings(Strict):
    """The gRPC listener and its limits."""

    listen: str = Field(default="127.0.0.1:50051", pattern=_HOST_PORT)
    shutdown_grace_s: float = Field(default=10.0, ge=0, le=3600)
    # After SIGTERM, keep serving with health NOT_SERVING this long before refusing new calls,
    # so balancers that health-check (Envoy, a mesh) stop sending first (docs/deploy.md).
    drain_delay_s: float = Field(default=0.0, ge=0, le=300)
    # `serve --workers N`: how long a worker may take to become ready (spawn, imports,
    # credentials, listeners) before the parent stops them all and exits 1 (docs/deploy.md).
    worker_start_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # TLS (and mutual TLS with client_ca_file) on `listen`; unset: plaintext.
    tls: TlsSettings | None = None
    # A plaintext listener serving grpc.health.v1 only (Kubernetes gRPC probes cannot do TLS);
    # unset: none.
    maintenance_listen: str | None = Field(default=None, pattern=_HOST_PORT)

    @field_validator("listen", "maintenance_listen")
    @classmethod
    def _port_in_range(cls, value: str | None) -> str | None:
        if value is not None and int(value.rsplit(":", 1)[1]) > 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        return value

    # Connection hygiene: an idle connection (no call in flight) is closed after
    # `max_connection_idle_s`; every connection is asked to go away after `max_connection_age_s`
    # and closed `max_connection_age_grace_s` later, whatever it is doing (this bounds a client
    # that never finishes sending a request); a client must finish the TLS and HTTP/2
    # handshake within `handshake_timeout_s`. 0 turns a bound off.
    max_connection_idle_s: float = Field(default=300.0, ge=0, le=86_400)
    max_connection_age_s: float = Field(default=3600.0, ge=0, le=604_800)
    max_connection_age_grace_s: float = Field(default=600.0, ge=0, le=86_400)
    handshake_timeout_s: float = Field(default=10.0, gt=0, le=600)

    max_body_bytes: int = Field(default=SAGEMAKER_MAX_BODY_BYTES, ge=1, le=SAGEMAKER_MAX_BODY_BYTES)
    # gRPC message cap: the body limit plus room for the envelope and JSON-as-Value overhead.
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Responses with JSON bodies up to this size also carry the parsed `json` view.
    max_json_view_bytes: int = Field(default=1024 * 1024, ge=0, le=8 * 1024 * 1024)
    # Raw-framed streams: parts already received when a message is sent go out joined into one
    # message up to this many bytes (never waiting for more; sagewire.core.coalesce). 0 = one
    # message per part.
    stream_coalesce_bytes: int = Field(default=64 * 1024, ge=0, le=4 * 1024 * 1024)
    # Inbound HTTP/2 flow-control window per stream: how far a client may send ahead of what
    # sagewire has read (e.g. an UploadAsync waiting on S3). 0 = gRPC's adaptive (BDP) window,
    # which grows to many MiB per stream.
    receive_window_bytes: int = Field(default=1024 * 1024, ge=0, le=64 * 1024 * 1024)

    @field_validator("receive_window_bytes")
    @classmethod
    def _window_size(cls, value: int) -> int:
        if 0 < value < 65_535:
            raise ValueError("must be 0 (adaptive) or at least 65535 (HTTP/2's initial window)")
        return value

    reflection: bool = True
    allow_endpoint_passthrough: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object per line (docs/observability.md); `text` for a terminal.
    log_format: Literal["text", "json"] = "text"
    # One INFO record per call on the `sagewire.access` logger (method, model, status, reason,
    # duration, sizes); off, only failures are logged.
    access_log: bool = True


class AwsSettings(Strict):
    """How sagewire reaches AWS. Credentials always come from the standard AWS chain."""

    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # Overrides for the runtime and S3 endpoints; the standard AWS_ENDPOINT_URL_* variables
    # work too when these are unset.
    runtime_endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    # SageMaker control plane (DescribeEndpoint, for ModelService's endpoint_status); the
    # standard AWS_ENDPOINT_URL_SAGEMAKER works too when this is unset.
    control_endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    # How long an endpoint status is reused; 0 turns the lookups off ("Unknown").
    endpoint_status_ttl_s: float = Field(default=15.0, ge=0, le=3600)
    max_pool_connections: int = Field(default=256, ge=1, le=10_000)
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    read_timeout_s: float = Field(default=70.0, gt=0, le=3600)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    # How InvokeEndpoint and InvokeEndpointWithResponseStream are sent: "lean" (botocore's
    # signer, retry rules and parsers without its client machinery; docs/configuration.md) or
    # "aioboto3". Every other AWS call uses aioboto3 (or the HTTP/2 SDK) either way.
    client: Literal["lean", "aioboto3"] = "lean"

    @model_validator(mode="after")
    def _lean_retry_mode(self) -> AwsSettings:
        # The lean path reuses botocore's standard retry handler; adaptive mode's client-side
        # rate limiter lives in botocore's client, which that path does not use.
        if self.client == "lean" and self.retry_mode == "adaptive":
            raise ValueError(
                'retry_mode "adaptive" needs client = "aioboto3" (the lean client has no '
                'client-side rate limiter); use "standard" or set client = "aioboto3"'
            )
        return self

    # InvokeEndpointWithBidirectionalStream (HTTP/2, its own port); unset: the regional
    # https://runtime.sagemaker.{region}.amazonaws.com:8443.
    bidi_endpoint_url: str | None = Field(default=None, pattern=r"^https://")
    # PEM file of the CAs trusted for the HTTP/2 endpoint instead of the system store (private
    # endpoints, the local emulator); unset: the system trust store.
    ca_bundle: str | None = None


class TelemetrySettings(Strict):
    """Metrics and tracing (docs/observability.md). Spans and OTel metrics go over OTLP when the
    standard OTEL_* variables say so, else to whatever provider is installed (for example by
    `opentelemetry-instrument`); `console_spans` installs one that prints spans, for debugging."""

    console_spans: bool = False
    service_name: str = "sagewire"
    # host:port of the admin HTTP listener serving Prometheus metrics at /metrics; unset, no
    # listener and no metrics are kept.
    metrics_listen: str | None = Field(
        default=None, pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$"
    )

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_port(cls, value: str | None) -> str | None:
        if value is not None and int(value.rsplit(":", 1)[1]) > 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        return value


class Settings(BaseSettings):
    """Everything sagewire needs to run. TOML file first, then SAGEWIRE_* environment overrides
    (nested with `__`, e.g. SAGEWIRE_SERVER__LISTEN=0.0.0.0:50051)."""

    model_config = SettingsConfigDict(
        env_prefix="SAGEWIRE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    rest: RestSettings = RestSettings()
    aws: AwsSettings = AwsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    async_jobs: AsyncJobSettings = AsyncJobSettings()
    auth: AuthSettings = AuthSettings()
    quotas: QuotaSettings = QuotaSettings()
    routes: dict[ModelName, RouteSettings] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _async_routes_have_keys(
        cls, routes: dict[str, RouteSettings], info: ValidationInfo
    ) -> dict[str, RouteSettings]:
        # Without a key no replica could issue or read a job.
        jobs: AsyncJobSettings | None = info.data.get("async_jobs")
        names = sorted(name for name, route in routes.items() if route.mode is RouteMode.ASYNC)
        if names and jobs is not None and not jobs.job_id_keys:
            raise ValueError(
                f"{', '.join(names)}: mode async needs at least one key in "
                "async_jobs.job_id_keys (see docs/async.md)"
            )
        return routes

    @model_validator(mode="after")
    def _security_consistent(self) -> Settings:
        auth, tls = self.auth, self.server.tls
        if auth.mtls and (tls is None or tls.client_ca_file is None):
            raise ValueError(
                "auth.mtls needs server.tls with client_ca_file: callers are identified by "
                "client certificates only under mutual TLS"
            )
        quotas = self.quotas
        limited = [quotas.per_caller, quotas.per_caller_route]
        if not auth.enabled and any(q.rps or q.max_concurrency for q in limited):
            raise ValueError(
                "quotas are per authenticated caller: configure [auth] (mtls, jwt or api_keys)"
            )
        if not auth.enabled:
            listed = [name for name, route in self.routes.items() if route.callers]
            if listed or auth.reflection_callers or auth.passthrough_callers:
                raise ValueError(
                    "callers are listed (routes "
                    + (", ".join(sorted(listed)) or "none")
                    + ") but no authentication is configured: set auth.mtls, auth.jwt or "
                    "auth.api_keys, or the lists protect nothing"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment wins over them.
        return (env_settings, init_settings)
