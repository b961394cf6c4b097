"""Reads a TOML file into Settings, turning every validation problem into one clear line."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from sagewire.config.settings import Settings


class ConfigError(Exception):
    """Configuration is unusable; `problems` name each bad key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration in {source}:\n  " + "\n  ".join(problems))


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return lines


def load_settings(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Load settings from `path` (TOML) plus SAGEWIRE_* environment variables.

    `overrides` (already-parsed values, e.g. from a test) are merged over the file's top-level
    sections; the environment still wins over both.
    """
    source = str(path) if path else "(defaults)"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except IsADirectoryError:
            raise ConfigError(source, ["is a directory; pass a TOML file"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, [f"not UTF-8 text: {exc.reason}"]) from None
        except OSError as exc:
            raise ConfigError(source, [f"cannot be read: {exc.strerror or exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    except SettingsError as exc:
        # A SAGEWIRE_* variable for a list or table that is not valid JSON.
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError("the environment", [f"{exc}{cause}"]) from None
