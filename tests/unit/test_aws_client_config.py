"""The shared botocore client settings sagewire builds from AwsSettings."""

from __future__ import annotations

from sagewire.aws.client import client_config
from sagewire.config import AwsSettings


def test_user_agent_is_fixed_and_names_sagewire() -> None:
    # A supplied user_agent makes botocore skip rebuilding the header on every request.
    agent = client_config(AwsSettings()).user_agent
    assert agent.startswith("sagewire/")
    assert " botocore/" in agent


def test_retries_count_every_attempt() -> None:
    config = client_config(AwsSettings(max_attempts=2, retry_mode="adaptive", client="aioboto3"))
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 2}
    assert config.max_pool_connections == AwsSettings().max_pool_connections
