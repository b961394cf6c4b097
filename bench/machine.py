"""What the numbers were measured on: cores, CPU, memory, Python, library versions, commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata

import psutil

from bench.services import REPO

LIBRARIES = (
    "grpcio",
    "protobuf",
    "aioboto3",
    "aiobotocore",
    "botocore",
    "aiohttp",
    "uvloop",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httptools",
    "pydantic",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def describe() -> dict[str, str]:
    """Machine facts as label → value, in display order."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    facts = {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical cores ({affinity} usable)",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "sagewire": _commit(),
    }
    facts["libraries"] = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    return facts
