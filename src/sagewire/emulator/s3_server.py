"""moto's S3 server on a free loopback port: the S3 of tests, ``sagewire local`` and
``python -m sagewire.emulator --moto``.

Why: async inference needs a real S3 API on the wire. moto's server is one, in-process (a
thread) and fast to start; SageMaker, sagewire and tests reach it through the ordinary S3
endpoint override (``endpoint_url`` / AWS_ENDPOINT_URL_S3), never a special code path. moto is a
development dependency (``moto[server]``), so it is imported only when a server is started.
Any credentials and region work; objects live in this process's memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import aioboto3
from botocore.exceptions import ClientError

REGION = "us-east-1"


@contextmanager
def running_s3(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve moto's S3 on ``host:port`` (0 = a free port) and yield its URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - moto is a dev dependency
        raise RuntimeError("a local S3 needs moto's server: pip install 'moto[server]'") from exc
    # moto's request handler logs every request at INFO through werkzeug.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.stop()


async def create_buckets(url: str, buckets: Iterable[str]) -> None:
    """Make each bucket in the S3 at ``url`` unless it exists already."""
    async with aioboto3.Session().client("s3", endpoint_url=url, region_name=REGION) as s3:
        for bucket in buckets:
            try:
                await s3.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise
