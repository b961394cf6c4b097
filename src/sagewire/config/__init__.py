"""Typed settings: server, AWS, limits and the route table, validated at start-up."""

from sagewire.config.loader import ConfigError, load_settings
from sagewire.config.settings import (
    AwsSettings,
    OptionName,
    RouteDefaults,
    RouteMode,
    RouteSettings,
    ServerSettings,
    Settings,
    StreamFraming,
)

__all__ = [
    "AwsSettings",
    "ConfigError",
    "OptionName",
    "RouteDefaults",
    "RouteMode",
    "RouteSettings",
    "ServerSettings",
    "Settings",
    "StreamFraming",
    "load_settings",
]
