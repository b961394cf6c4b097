"""Calls observed in batches (sagewire.observability.calls, .metrics, .batches): every series
exact after N calls and a scrape, histograms as prometheus-client's own observe() gives them,
access records before a later WARNING line, nothing stuck when an event loop closes."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from write_capture import Writes

from sagewire.aws.instrumented import report_upstream
from sagewire.observability import access, calls, logs, signals
from sagewire.observability.batches import Batch, PendingHistogram
from sagewire.observability.metrics import LATENCY_BUCKETS, Metrics

SERVICE = "sagewire.v1.InferenceService"


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics()


class _Quota:
    available_capacity = 17


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_every_series_is_exact_after_n_calls_and_a_scrape(metrics: Metrics) -> None:
    observer = calls.Observer(metrics)
    codes = ["OK"] * 23 + ["UNAVAILABLE"] * 5 + ["INVALID_ARGUMENT"] * 2
    for n, code in enumerate(codes):
        call = observer.start(SERVICE, "Invoke")
        call.received, call.bytes_in = 1, 10
        calls.set_model("echo")
        gauge = signals.in_flight()
        gauge.inc()
        report_upstream("sagemaker-runtime", _Quota(), "InvokeEndpoint", "OK", 0.001 * n, n % 3)
        gauge.dec()
        if code != "OK":
            calls.failed(code, "SOME_REASON")
        call.sent = 1
        observer.finish(call)
    open_call = observer.start(SERVICE, "Invoke")  # still running at the scrape
    calls.set_model("echo")
    signals.in_flight().inc()
    await asyncio.sleep(0)  # the batch is not due yet: the scrape applies it

    grpc = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Invoke"}
    assert _value(metrics, "grpc_server_started_total", **grpc) == len(codes) + 1
    for code in set(codes):
        handled = _value(metrics, "grpc_server_handled_total", **grpc, grpc_code=code)
        assert handled == codes.count(code), code
    assert _value(metrics, "grpc_server_handling_seconds_count", **grpc) == len(codes)
    assert _value(metrics, "grpc_server_msg_received_total", **grpc) == len(codes)
    assert _value(metrics, "grpc_server_msg_sent_total", **grpc) == len(codes)
    upstream = {"model": "echo", "operation": "InvokeEndpoint"}
    assert _value(metrics, "sagewire_upstream_requests_total", **upstream, outcome="OK") == len(
        codes
    )
    seconds = _value(metrics, "sagewire_upstream_request_duration_seconds_sum", **upstream)
    assert seconds == pytest.approx(sum(0.001 * n for n in range(len(codes))))
    retries = sum(n % 3 for n in range(len(codes)))
    assert _value(metrics, "sagewire_upstream_retries_total", **upstream) == retries
    quota = _value(metrics, "sagewire_aws_retry_quota_available", service="sagemaker-runtime")
    assert quota == 17
    assert _value(metrics, "sagewire_route_in_flight", model="echo") == 1  # the open call

    observer.finish(open_call)
    signals_gauge = metrics.pending(metrics.route_in_flight, "echo")
    signals_gauge.dec()
    assert _value(metrics, "sagewire_route_in_flight", model="echo") == 0
    assert _value(metrics, "grpc_server_handled_total", **grpc, grpc_code="OK") == 24


def test_a_batched_histogram_is_what_observe_gives() -> None:
    values = [0.0, 0.001, 0.005, 0.0050001, 0.3, 2.5, 299.0, 300.0, 301.0, 1e9, 0.005]
    exposition = []
    for batched in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("h_seconds", "h", ("a",), buckets=LATENCY_BUCKETS, registry=registry)
        child = histogram.labels("x")
        pending = PendingHistogram(child)
        for value in values:
            (pending if batched else child).observe(value)
        pending.apply()
        pending.apply()  # nothing twice
        text = generate_latest(registry).decode()
        exposition.append([line for line in text.splitlines() if "_created" not in line])
    assert exposition[0] == exposition[1]
    assert 'h_seconds_bucket{a="x",le="0.005"} 4.0' in exposition[1]


@pytest.fixture
def json_lines() -> Iterator[Writes]:
    stream = Writes()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("INFO", "json", stream, batched=True)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_warning_comes_after_the_access_records_of_calls_that_ended_before_it(
    json_lines: Writes,
) -> None:
    observer = calls.Observer(access=True)
    for _ in range(3):
        call = observer.start(SERVICE, "Invoke")
        call.bytes_in = 5
        observer.finish(call)
    assert json_lines.writes == []  # waiting (50 ms batches)
    logging.getLogger("sagewire.test").warning("after the calls")
    lines = [json.loads(line) for line in "".join(json_lines.writes).splitlines()]
    assert [line["logger"] for line in lines] == ["sagewire.access"] * 3 + ["sagewire.test"]
    assert [line["access"]["bytes_in"] for line in lines[:3]] == [5, 5, 5]
    assert lines[3]["message"] == "after the calls"


def test_lines_waiting_when_their_event_loop_closed_go_out_with_the_next_loop() -> None:
    stream = Writes()
    handler = logs.BatchedStreamHandler(stream, interval_s=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"sagewire.test.loops.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    async def log(message: str) -> None:
        logger.info(message)

    async def log_and_wait(message: str) -> None:
        logger.info(message)
        for _ in range(600):  # up to 30 s on a busy machine; the timer is 50 ms
            if stream.writes:
                return
            await asyncio.sleep(0.05)

    asyncio.run(log("one"))  # its loop closes before its timer could write
    assert stream.writes == []
    asyncio.run(log_and_wait("two"))
    assert stream.writes == ["one\ntwo\n"]


async def test_a_size_flush_leaves_no_timer_and_the_next_item_waits_its_own() -> None:
    flushed: list[list[int]] = []
    batch = Batch(flushed.append, after_s=3600, limit=3)
    for item in range(4):
        assert batch.add(item)
    assert flushed == [[0, 1, 2]]
    batch.flush()
    batch.flush()  # nothing waits: nothing handed over
    assert flushed == [[0, 1, 2], [3]]


_QUEUED_BY: contextvars.ContextVar[str] = contextvars.ContextVar("queued_by", default="nobody")


async def test_the_timer_flushes_in_a_context_of_its_own_not_the_first_callers() -> None:
    # The first item's caller (a call, its span current) must not lend its context to the
    # flush of every item: OTel exemplars and log trace ids were read from it.
    seen: list[str] = []
    flushed = asyncio.Event()

    def flush(items: list[int]) -> None:
        seen.append(_QUEUED_BY.get())
        flushed.set()

    batch = Batch(flush, after_s=0.01, limit=10)

    async def queue(name: str, item: int) -> None:
        _QUEUED_BY.set(name)
        batch.add(item)

    await asyncio.create_task(queue("call A", 1))
    await asyncio.create_task(queue("call B", 2))
    await asyncio.wait_for(flushed.wait(), 30)
    assert seen == ["nobody"]


def test_off_an_event_loop_a_batch_says_nothing_is_due() -> None:
    flushed: list[list[str]] = []
    batch = Batch(flushed.append, after_s=0.05, limit=10)
    assert batch.add("a") is False
    batch.flush()
    assert flushed == [["a"]]


async def test_json_access_lines_written_directly_are_what_the_logging_path_writes(
    json_lines: Writes,
) -> None:
    observer = calls.Observer(access=True)

    def one_call() -> None:
        call = observer.start(SERVICE, "Invoke")
        calls.set_model("echo")
        calls.failed("UNAVAILABLE", "MODEL_NOT_READY")
        call.bytes_in, call.bytes_out = 7, 9
        observer.finish(call)
        call.ended, call.duration = 1700000000.25, 0.0123  # the same line twice

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        # pytest's capture handlers set aside: sagewire's JSON handler is the only one.
        root.handlers[:] = [h for h in handlers if isinstance(h, logs.BatchedStreamHandler)]
        assert logs.json_access_handler(access.access_log) is not None
        one_call()
        calls.write_waiting()  # written as lines directly
        direct = "".join(json_lines.writes)
        json_lines.writes.clear()
        # With a second handler, records take the logging module's path.
        root.handlers[:] = handlers
        assert logs.json_access_handler(access.access_log) is None
        one_call()
        calls.write_waiting()
        logs.flush()
    finally:
        root.handlers[:] = handlers
    assert direct
    assert "".join(json_lines.writes) == direct
    assert json.loads(direct)["access"] == {
        "method": f"{SERVICE}/Invoke",
        "model": "echo",
        "status": "UNAVAILABLE",
        "reason": "MODEL_NOT_READY",
        "duration_ms": 12.3,
        "bytes_in": 7,
        "bytes_out": 9,
    }
