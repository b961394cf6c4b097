"""Emulator configuration: which endpoints exist, what model serves each, which faults apply.

Why: endpoints are data. A TOML file (or ``default_config()``) declares them; pydantic checks
every key at start-up so a typo fails loudly with the key's path instead of being ignored.

    [endpoints.my-llm]
    container_url = "http://127.0.0.1:8080"   # or: model = "tokens"
    variants = ["AllTraffic", "B"]            # first one serves untargeted calls
    [endpoints.my-llm.fault]
    latency_ms = 200
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sagewire.emulator.async_config import AsyncInferenceConfig
from sagewire.emulator.faults import Fault
from sagewire.emulator.models import BUILTIN_MODELS

# SageMaker's pattern for endpoint and variant names.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class ConfigError(ValueError):
    """The emulator configuration is invalid; the message names each bad key."""


def _sagemaker_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid SageMaker name (1-63 of [a-zA-Z0-9-])")
    return value


SageMakerName = Annotated[str, AfterValidator(_sagemaker_name)]


class EndpointConfig(BaseModel):
    """One emulated endpoint. Set exactly one of ``model`` and ``container_url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None, description="A built-in demo model, e.g. echo or tokens."
    )
    container_url: str | None = Field(
        default=None, description="Base URL of a model container serving POST /invocations."
    )
    container_timeout_s: float = Field(default=60.0, gt=0, description="Wait for the container.")
    variants: list[SageMakerName] = Field(default_factory=lambda: ["AllTraffic"], min_length=1)
    fault: Fault | None = None
    async_inference: AsyncInferenceConfig = AsyncInferenceConfig()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and value not in BUILTIN_MODELS:
            known = ", ".join(sorted(BUILTIN_MODELS))
            raise ValueError(f"unknown model {value!r}; built-in models: {known}")
        return value

    @field_validator("container_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s)://host:port URL")
        return value

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("variant names must be unique")
        return value

    @model_validator(mode="after")
    def _one_backend(self) -> EndpointConfig:
        if (self.model is None) == (self.container_url is None):
            raise ValueError("set exactly one of 'model' or 'container_url'")
        return self


class EmulatorConfig(BaseModel):
    """All emulated endpoints, by endpoint name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: dict[SageMakerName, EndpointConfig] = Field(default_factory=dict)


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "emulator config") -> EmulatorConfig:
    """Validate already-parsed data; raises ``ConfigError`` naming every bad key."""
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}:\n{_format(exc)}") from None


def load_config(path: str | Path) -> EmulatorConfig:
    """Read and validate a TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read emulator config {path}: {exc.strerror}") from None
    return parse_config(data, source=str(path))


def default_config() -> EmulatorConfig:
    """The built-in demo endpoints (see docs/emulator.md)."""
    echo = EndpointConfig(model="echo", variants=["AllTraffic", "B"])
    return EmulatorConfig(
        endpoints={
            "echo": echo,
            "tokens": EndpointConfig(model="tokens"),
            "sse-tokens": EndpointConfig(model="sse-tokens"),
            "firehose": EndpointConfig(model="firehose"),
            "chat": EndpointConfig(model="chat"),
            "model-error": EndpointConfig(
                model="echo",
                fault=Fault(
                    error="model_error",
                    original_status=500,
                    original_message="model crashed (demo)",
                ),
            ),
            "not-ready": EndpointConfig(model="echo", fault=Fault(error="model_not_ready")),
            # A serverless endpoint waking from zero: its first calls answer ModelNotReady.
            "cold-start": EndpointConfig(model="echo", fault=Fault(cold_for_calls=5)),
            "throttled": EndpointConfig(model="echo", fault=Fault(error="throttling")),
            "unavailable": EndpointConfig(model="echo", fault=Fault(error="service_unavailable")),
            "slow": EndpointConfig(model="tokens", fault=Fault(part_delay_ms=50)),
            "stream-error": EndpointConfig(
                model="tokens",
                fault=Fault(stream_error_after_parts=3, stream_error_code="StreamBroken"),
            ),
            "bidi-echo": EndpointConfig(model="bidi-echo"),
            # Async inference (InvokeEndpointAsync): echoes after about a second.
            "slow-echo": EndpointConfig(model="slow-echo"),
        }
    )
