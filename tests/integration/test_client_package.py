"""The sagewire-client distribution installs and works without the server's dependencies.

The wheel is built from clients/python with hatchling, its metadata and files are checked,
and then it is used from a Python process that can import nothing of the server: its
packages (aioboto3, botocore, pydantic, aiohttp, moto) and sagewire's server modules are
blocked, and the editable sagewire source is taken off the path.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from support import Sagewire

ROOT = Path(__file__).resolve().parents[2]

_ISOLATED = r"""
import importlib.abc, sys
wheel_dir, root = sys.argv[1], sys.argv[2]
editable = {root + "/src", root + "/generated"}  # the server's source tree, off the path
sys.path[:] = [wheel_dir] + [p for p in sys.path if p.rstrip("/") not in editable]
BLOCKED = ("aioboto3", "aiobotocore", "botocore", "boto3", "pydantic", "pydantic_settings",
           "aiohttp", "moto", "sagewire.core", "sagewire.aws", "sagewire.transports",
           "sagewire.emulator", "sagewire.config", "sagewire.cli")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"the client imported a server module: {name}")

sys.meta_path.insert(0, Block())
import sagewire.client
from sagewire.client.cli.main import main
assert sagewire.client.__file__.startswith(wheel_dir), sagewire.client.__file__
sys.exit(main(sys.argv[3:]))
"""


def _build(into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(into),
            str(ROOT / "clients" / "python"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = into.glob("sagewire_client-*.whl")
    return wheel


async def test_client_wheel_needs_and_ships_only_the_client(
    sagewire: Sagewire, tmp_path: Path
) -> None:
    wheel = await asyncio.to_thread(_build, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        archive.extractall(tmp_path / "site")
    required = {
        r.split(">")[0].split("=")[0].strip() for r in metadata.get_all("Requires-Dist", [])
    }
    assert required == {"grpcio", "protobuf", "googleapis-common-protos", "tqdm"}
    shipped = {n.split("/")[0] + "/" + n.split("/")[1] for n in names if n.startswith("sagewire/")}
    assert shipped == {"sagewire/client", "sagewire/v1"}

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ISOLATED,
        str(tmp_path / "site"),
        str(ROOT),
        "invoke",
        "echo",
        "--target",
        sagewire.target,
        "--json",
        '{"from": "the wheel"}',
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert b'"from": "the wheel"' in out
