"""Local SageMaker Runtime emulator: wire-compatible InvokeEndpoint and
InvokeEndpointWithResponseStream with demo models, container fronting and fault injection.

Why: sagewire's tests (and ``sagewire local``) need SageMaker on loopback that real aioboto3
clients cannot tell apart from AWS for the calls the gateway makes. See docs/emulator.md.
"""

from sagewire.emulator.config import (
    ConfigError,
    EmulatorConfig,
    EndpointConfig,
    default_config,
    load_config,
    parse_config,
)
from sagewire.emulator.faults import Fault
from sagewire.emulator.model_api import Model, ModelFailure, ModelReply, ModelRequest
from sagewire.emulator.models import BUILTIN_MODELS
from sagewire.emulator.server import RunningEmulator, main, running_emulator
from sagewire.emulator.stats import EndpointStats

__all__ = [
    "BUILTIN_MODELS",
    "ConfigError",
    "EmulatorConfig",
    "EndpointConfig",
    "EndpointStats",
    "Fault",
    "Model",
    "ModelFailure",
    "ModelReply",
    "ModelRequest",
    "RunningEmulator",
    "default_config",
    "load_config",
    "main",
    "parse_config",
    "running_emulator",
]
