"""Metric updates wait in batches (observability.metrics): one that fails is logged and the
rest of its batch is still applied."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sagewire.observability.metrics import Metrics


def _broken(metrics: Metrics) -> None:
    raise ValueError("a bug in an update")


def _count_ok(metrics: Metrics) -> None:
    metrics.method("sagewire.v1.InferenceService", "Invoke", "unary").handled("OK").inc()


async def test_a_failing_update_does_not_lose_the_rest_of_its_batch(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    metrics.later(_count_ok, metrics)
    metrics.later(_broken, metrics)
    metrics.later(_count_ok, metrics)
    await asyncio.sleep(0)  # still waiting for the batch: the scrape applies it
    labels = {
        "grpc_type": "unary",
        "grpc_service": "sagewire.v1.InferenceService",
        "grpc_method": "Invoke",
        "grpc_code": "OK",
    }
    with caplog.at_level(logging.ERROR, logger="sagewire.metrics"):
        handled = metrics.registry.get_sample_value("grpc_server_handled_total", labels)
    assert handled == 2
    assert [r.getMessage() for r in caplog.records] == ["a metric update failed: _broken"]
