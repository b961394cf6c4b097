"""The benchmark's pure helpers: percentiles, repeats, ratios, payloads and the report."""

from __future__ import annotations

import json
import math

import pytest

from bench import report
from bench.payloads import firehose_request, json_payload, parts_in
from bench.report import BEGIN, END, Results, unary_key
from bench.stats import (
    combined_ceiling,
    paired_differences,
    paired_ratios,
    percentile,
    ratio,
    spread,
)

# -- stats ----------------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks_of_unsorted_values() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_missing_not_zero() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_spread_is_median_and_range_ignoring_failed_runs() -> None:
    s = spread([3.0, math.nan, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.runs) == (2.0, 1.0, 3.0, 3)
    assert s.relative == pytest.approx(0.5)
    assert spread([math.nan]).missing
    assert spread([]).missing


def test_ratio_and_ceiling_refuse_missing_or_zero_inputs() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    # Two equally fast halves of one call: each call costs both, so half the rate.
    assert combined_ceiling(1000.0, 1000.0) == pytest.approx(500.0)
    assert combined_ceiling(3000.0, 1500.0) == pytest.approx(1000.0)
    assert math.isnan(combined_ceiling(0.0, 1000.0))
    assert math.isnan(combined_ceiling(math.nan, 1000.0))


def test_pairing_needs_runs_from_the_same_repeats() -> None:
    assert paired_differences([3.0, 5.0], [1.0, 2.0]) == [2.0, 3.0]
    assert paired_ratios([3.0, 5.0], [1.0, 0.0])[0] == 3.0
    assert math.isnan(paired_ratios([3.0, 5.0], [1.0, 0.0])[1])
    with pytest.raises(ValueError, match="pair"):
        paired_differences([1.0], [1.0, 2.0])


# -- payloads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [13, 1024, 256 * 1024])
def test_json_payload_has_the_exact_size_and_is_json(size: int) -> None:
    body = json_payload(size)
    assert len(body) == size
    assert set(json.loads(body)) == {"inputs"}


def test_json_payload_refuses_sizes_that_cannot_hold_the_envelope() -> None:
    with pytest.raises(ValueError, match="at least 13"):
        json_payload(12)


def test_firehose_part_count_rounds_up() -> None:
    assert parts_in(1024 * 1024, 1024) == 1024
    assert parts_in(1025, 1024) == 2
    assert json.loads(firehose_request(10, 4)) == {"bytes": 10, "part_size": 4}


# -- report ---------------------------------------------------------------------------------------


def test_fmt_shows_median_and_range_or_a_dash() -> None:
    assert report.fmt(spread([1.0, 2.0, 4.0]), 1, " ms") == "2.0 ms (1.0–4.0)"
    assert report.fmt(spread([1234.5]), 0) == "1,234"  # a single run has no range
    assert report.fmt(spread([]), 2) == "—"
    assert report.fmt_number(math.nan) == "—"


def test_table_right_aligns_every_column_but_the_first() -> None:
    text = report.table(["a", "b", "c"], [["x", "1", "2"]])
    assert text.splitlines() == ["| a | b | c |", "|---|---:|---:|", "| x | 1 | 2 |"]


def test_merge_replaces_only_the_results_block() -> None:
    doc = f"# Benchmarks\n\nintro\n\n{BEGIN}\nold numbers\n{END}\n\n## Converse\n\nkept\n"
    merged = report.merge_block(doc, "new numbers", "unused {results}")
    assert "old numbers" not in merged
    assert "new numbers" in merged
    assert merged.startswith("# Benchmarks\n\nintro\n\n")
    assert merged.endswith(f"{END}\n\n## Converse\n\nkept\n")


def test_merge_creates_from_the_template_and_never_drops_unmarked_text() -> None:
    created = report.merge_block(None, "numbers", "# T\n\n{results}\n")
    assert created == f"# T\n\n{BEGIN}\nnumbers\n{END}\n"
    appended = report.merge_block("# Hand-written\n", "numbers", "unused")
    assert appended.startswith("# Hand-written\n")
    assert appended.endswith(f"{BEGIN}\nnumbers\n{END}\n")


def _results() -> Results:
    """Two repeats; repeat 2 of the direct caller failed."""
    r = Results(repeats=2)
    kb = report.PAYLOADS[0]
    for repeat, (mine, direct) in enumerate([(1.6, 1.2), (1.9, None)]):
        r.record(unary_key("sagewire", kb, 1), repeat, {"p50_ms": mine})
        if direct is not None:
            r.record(unary_key("direct", kb, 1), repeat, {"p50_ms": direct})
    for repeat, rates in enumerate([(900.0, 500.0, 3000.0, 3000.0), (1000.0, 500.0, 0.0, 0.0)]):
        for key, rate in zip(("sagewire", "fastapi", "grpc-echo", "raw-http"), rates, strict=True):
            r.record(unary_key(key, kb, 64), repeat, {"calls_per_s": rate})
    r.memory["sagewire, 1,000 open streams"] = 120.0
    return r


def test_results_keep_repeats_aligned_so_ratios_pair_the_same_repeat() -> None:
    r = _results()
    kb = report.PAYLOADS[0]
    assert math.isnan(r.values(unary_key("direct", kb, 1), "p50_ms")[1])
    added = report.added_latency(r, kb)
    assert added.median == pytest.approx(0.4)  # only repeat 1 has both numbers
    assert added.runs == 1
    assert report.throughput_ratio(r, "fastapi", kb, 64).median == pytest.approx(1.9)
    ceiling = report.throughput_ratio(r, "ceiling", kb, 64)
    assert ceiling.median == pytest.approx(0.6)  # 900 / 1500; repeat 2 has no ceiling
    assert ceiling.runs == 1


def test_goals_say_met_not_met_or_unknown() -> None:
    r = _results()
    kb = report.PAYLOADS[0]
    r.record(unary_key("sagewire", kb, 16), 0, {"server_cpu_s": 0.6, "calls": 1000})
    r.record(unary_key("sagewire-aioboto3", kb, 16), 0, {"server_cpu_s": 1.5, "calls": 1000})
    r.record("parts/sagewire/1", 0, {"items_per_s": 500.0})
    r.record("parts/direct/1", 0, {"items_per_s": 1000.0})
    goals = report.goals_section(r)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in goals.splitlines()[4:]}
    # 1.6 − 1.2 ms: over the 0.3 ms target.
    assert rows["unary added latency p50 over direct aioboto3 (1 KB, @1)"].endswith("**not met** |")
    assert "**met**" in rows["throughput ÷ FastAPI reference (1 KB, @64)"]
    assert "0.60 s" in rows["sagewire CPU per 1,000 unary calls (1 KB, @16)"]
    assert "**met**" in rows["sagewire CPU per 1,000 unary calls (1 KB, @16)"]
    assert rows["relayed parts/s ÷ direct reader (@1)"].endswith("**not met** |")
    assert rows["time-to-first-part overhead p50 over direct"].endswith("— | — |")
    assert rows["added latency p50 over direct aioboto3 (256 KB JSON, @1)"].endswith("— | — |")
    comparison = next(line for key, line in rows.items() if key.startswith("for comparison"))
    assert "1.50 s; 0.40×" in comparison


def test_a_failed_run_is_reported_not_hidden() -> None:
    text = report.errors_section(_results())
    assert "unary/direct/1024/1` repeat 2: no result" in text
    r = Results(repeats=1)
    r.record("open/sagewire", 0, {"errors": 2, "error_texts": ["AioRpcError: UNAVAILABLE"]})
    assert "2 errors (AioRpcError: UNAVAILABLE)" in report.errors_section(r)


def test_rest_bridge_goal_is_against_the_fastapi_reference() -> None:
    r = Results(repeats=1)
    r.record(report.unary_key("fastapi", 1024, 64), 0, {"calls_per_s": 100.0})
    r.record(report.unary_key("rest", 1024, 64), 0, {"calls_per_s": 140.0})
    r.record(report.unary_key("rest-raw", 1024, 64), 0, {"calls_per_s": 120.0})
    rows = [line for line in report.goals_section(r).splitlines() if "issue 11" in line]
    assert len(rows) == 2
    assert "1.40×" in rows[0]
    assert rows[0].endswith("**met** |")
    assert "1.20×" in rows[1]
    assert rows[1].endswith("**not met** |")
