"""Per-endpoint async inference settings of the emulator (``[endpoints.<name>.async_inference]``).

Why: SageMaker configures where async results go and how much work an instance takes on the
endpoint (AsyncInferenceConfig: S3OutputPath, S3FailurePath, MaxConcurrentInvocationsPerInstance);
the emulator mirrors that, plus a bound on its in-memory queue.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_S3_PATH = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[\x21-\x7e]*)?$"


class AsyncInferenceConfig(BaseModel):
    """Where an endpoint's async results go and how many run at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_path: str = Field(
        default="s3://sagewire-emulator/async-output",
        pattern=_S3_PATH,
        description="S3OutputPath: outputs are written as <path>/<uuid>.out.",
    )
    failure_path: str = Field(
        default="s3://sagewire-emulator/async-failures",
        pattern=_S3_PATH,
        description="S3FailurePath: failures are written as <path>/<uuid>-error.out.",
    )
    workers: int = Field(default=2, ge=1, le=64, description="Invocations run at once.")
    max_queue: int = Field(
        default=64, ge=1, le=100_000, description="Accepted requests waiting for a worker."
    )
