"""Turns measured runs into the markdown tables printed and recorded in docs/benchmarks.md.

The results block sits between two markers in the doc; a run replaces only that block, so the
hand-written sections around it (how to read the numbers, the optimisation log, other
engineers' sections such as Converse) survive every rewrite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import (
    Spread,
    combined_ceiling,
    paired_differences,
    paired_ratios,
    spread,
)

BEGIN = "<!-- bench:results:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:results:end -->"

KB = 1024
PAYLOADS = (1 * KB, 256 * KB)
CONCURRENCIES = (1, 16, 64)

# key → label, in table order
CONTENDERS = {
    "sagewire": "sagewire (gRPC → lean SigV4 client, the default)",
    "sagewire-aioboto3": "sagewire with aws.client=aioboto3",
    "direct": "direct aioboto3 caller",
    "fastapi": "FastAPI + uvicorn + aioboto3 (REST)",
    "grpc-echo": "bare grpc.aio echo (gRPC ceiling)",
    "raw-http": "raw aiohttp POST to the emulator (HTTP ceiling)",
    "rest": "sagewire REST bridge (`…:invoke`, JSON)",
    "rest-raw": "sagewire REST raw passthrough (`…/invocations`)",
}
# The REST bridge's contenders (issue 11), compared with the FastAPI reference.
REST_CONTENDERS = ("rest", "rest-raw")
STREAMERS = {
    "sagewire": "sagewire InvokeStream",
    "direct": "direct aioboto3 response stream",
    "grpc-echo": "bare grpc.aio server stream (gRPC ceiling)",
    "raw-http": "raw aiohttp + event-stream parser (HTTP ceiling)",
}

# Issue 15's targets (docs/benchmarks.md), each a paired ratio or difference within one run.
GOAL_ADDED_LATENCY_MS = 0.3  # unary 1 KB @1 over direct aioboto3 (or faster than direct)
GOAL_THROUGHPUT_RATIO = 1.8  # ÷ FastAPI reference, 1 KB @64
GOAL_CPU_PER_1K_S = 0.8  # sagewire's CPU per 1,000 unary calls, 1 KB @16
GOAL_ADDED_LATENCY_256K_MS = 1.5  # unary 256 KB JSON @1 over direct aioboto3
GOAL_PARTS_RATIO = 0.6  # relayed parts/s ÷ direct reader @1
GOAL_TTFP_OVERHEAD_MS = 0.8  # time to first part p50 over direct
GOAL_REST_THROUGHPUT_RATIO = 1.3  # issue 11: the REST bridge ÷ FastAPI reference, 1 KB @64


@dataclass
class Results:
    """Everything one run measured. `runs[key][repeat]` holds one run's metrics ({} if it
    failed), so runs of different contenders in the same repeat can be paired."""

    repeats: int
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, key: str, repeat: int, metrics: Mapping[str, Any]) -> None:
        self.runs.setdefault(key, [{} for _ in range(self.repeats)])[repeat] = dict(metrics)

    def values(self, key: str, metric: str) -> list[float]:
        # A contender that never ran is `repeats` missing runs, so it still pairs (as NaN).
        runs = self.runs.get(key) or [{} for _ in range(self.repeats)]
        return [float(run.get(metric, math.nan)) for run in runs]

    def spread(self, key: str, metric: str) -> Spread:
        return spread(self.values(key, metric))


def unary_key(contender: str, payload: int, concurrency: int) -> str:
    return f"unary/{contender}/{payload}/{concurrency}"


def size_label(size: int) -> str:
    return f"{size // KB} KB" if size % KB == 0 else f"{size} B"


# -- formatting ---------------------------------------------------------------------------------


def fmt(value: Spread, digits: int = 2, suffix: str = "") -> str:
    """`median (low–high)` over repeats, `median` for a single run, `—` when missing."""
    if value.missing:
        return "—"
    text = f"{value.median:,.{digits}f}{suffix}"
    if value.runs > 1:
        text += f" ({value.low:,.{digits}f}–{value.high:,.{digits}f})"
    return text


def fmt_number(value: float, digits: int = 1, suffix: str = "") -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}{suffix}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the rest right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def merge_block(existing: str | None, block: str, template: str) -> str:
    """The doc with its results block replaced; everything outside the markers is kept.

    No doc yet: `template` with `{results}` filled in. A doc without markers: the block is
    appended, so nothing written by hand is lost.
    """
    wrapped = f"{BEGIN}\n{block.strip()}\n{END}"
    if existing is None:
        return template.replace("{results}", wrapped)
    start, end = existing.find(BEGIN), existing.find(END)
    if start == -1 or end == -1 or end < start:
        return existing.rstrip() + "\n\n" + wrapped + "\n"
    return existing[:start] + wrapped + existing[end + len(END) :]


# -- sections -----------------------------------------------------------------------------------


def unary_section(r: Results, payload: int) -> str:
    rows = []
    for key, label in CONTENDERS.items():
        c1 = unary_key(key, payload, 1)
        rows.append(
            [
                label,
                fmt(r.spread(c1, "p50_ms")),
                fmt(r.spread(c1, "p99_ms")),
                fmt(r.spread(unary_key(key, payload, 16), "calls_per_s"), 0),
                fmt(r.spread(unary_key(key, payload, 64), "calls_per_s"), 0),
                fmt(r.spread(unary_key(key, payload, 64), "p50_ms"), 1),
            ]
        )
    headers = [
        "contender",
        "p50 ms @1",
        "p99 ms @1",
        "calls/s @16",
        "calls/s @64",
        "p50 ms @64",
    ]
    return f"#### Unary, {size_label(payload)} JSON payload\n\n" + table(headers, rows)


def _ceiling_values(r: Results, payload: int, concurrency: int) -> list[float]:
    echo = r.values(unary_key("grpc-echo", payload, concurrency), "calls_per_s")
    raw = r.values(unary_key("raw-http", payload, concurrency), "calls_per_s")
    return [combined_ceiling(a, b) for a, b in zip(echo, raw, strict=True)]


def added_latency(r: Results, payload: int) -> Spread:
    return spread(
        paired_differences(
            r.values(unary_key("sagewire", payload, 1), "p50_ms"),
            r.values(unary_key("direct", payload, 1), "p50_ms"),
        )
    )


def throughput_ratio(
    r: Results, other: str, payload: int, concurrency: int, mine_key: str = "sagewire"
) -> Spread:
    mine = r.values(unary_key(mine_key, payload, concurrency), "calls_per_s")
    if other == "ceiling":
        theirs = _ceiling_values(r, payload, concurrency)
    else:
        theirs = r.values(unary_key(other, payload, concurrency), "calls_per_s")
    return spread(paired_ratios(mine, theirs))


def ratios_section(r: Results) -> str:
    rows = []
    for payload in PAYLOADS:
        size = size_label(payload)
        rows.append(
            [
                f"sagewire p50 latency added over direct aioboto3 @1, {size}",
                fmt(added_latency(r, payload), 2, " ms"),
            ]
        )
        for concurrency in (16, 64):
            ceiling = spread(_ceiling_values(r, payload, concurrency))
            rows += [
                [
                    f"sagewire ÷ FastAPI throughput @{concurrency}, {size}",
                    fmt(throughput_ratio(r, "fastapi", payload, concurrency), 2, "×"),
                ],
                [
                    f"combined ceiling 1/(1/echo + 1/raw-HTTP) @{concurrency}, {size}",
                    fmt(ceiling, 0, " calls/s"),
                ],
                [
                    f"sagewire ÷ combined ceiling @{concurrency}, {size}",
                    fmt(throughput_ratio(r, "ceiling", payload, concurrency), 2, "×"),
                ],
                [
                    f"sagewire ÷ direct aioboto3 throughput @{concurrency}, {size}",
                    fmt(throughput_ratio(r, "direct", payload, concurrency), 2, "×"),
                ],
            ]
        for key in REST_CONTENDERS:
            for concurrency in (16, 64):
                rows.append(
                    [
                        f"{CONTENDERS[key]} ÷ FastAPI throughput @{concurrency}, {size}",
                        fmt(throughput_ratio(r, "fastapi", payload, concurrency, key), 2, "×"),
                    ]
                )
    return "#### Derived (paired within each repeat)\n\n" + table(["measure", "value"], rows)


def open_loop_section(r: Results) -> str:
    rate = r.settings.get("open-loop rate", "?")
    rows = []
    for key, label in CONTENDERS.items():
        k = f"open/{key}"
        rows.append(
            [
                label,
                fmt(r.spread(k, "calls_per_s"), 0),
                fmt(r.spread(k, "p50_ms")),
                fmt(r.spread(k, "p99_ms")),
                fmt(r.spread(k, "dropped"), 0),
            ]
        )
    headers = ["contender", "achieved calls/s", "p50 ms", "p99 ms", "dropped"]
    return (
        f"#### Open loop: fixed {rate}, 1 KB\n\n"
        "Latency counts from each call's scheduled start (no coordinated omission).\n\n"
        + table(headers, rows)
    )


def stream_section(r: Results) -> str:
    rows = []
    for key, label in STREAMERS.items():
        rows.append(
            [
                label,
                fmt(r.spread(f"ttfp/{key}", "first_p50_ms")),
                fmt(r.spread(f"ttfp/{key}", "first_p99_ms")),
                fmt(r.spread(f"parts/{key}/1", "items_per_s"), 0),
                fmt(r.spread(f"parts/{key}/16", "items_per_s"), 0),
            ]
        )
    overhead = spread(
        paired_differences(
            r.values("ttfp/sagewire", "first_p50_ms"), r.values("ttfp/direct", "first_p50_ms")
        )
    )
    relay = spread(
        paired_ratios(
            r.values("parts/sagewire/1", "items_per_s"), r.values("parts/direct/1", "items_per_s")
        )
    )
    headers = [
        "contender",
        "first part p50 ms",
        "first part p99 ms",
        "parts/s @1",
        "parts/s @16",
    ]
    parts = r.settings.get("stream parts", "?")
    return (
        "#### Streaming\n\n"
        "Time to first part: `tokens` (8 words, first part at once), one stream at a time. "
        f"Parts/s: `firehose`, {parts}, with 1 and 16 streams at once.\n\n"
        + table(headers, rows)
        + "\n\n"
        + table(
            ["measure", "value"],
            [
                ["time-to-first-part overhead, sagewire − direct (p50)", fmt(overhead, 2, " ms")],
                ["relayed parts/s, sagewire ÷ direct @1", fmt(relay, 2, "×")],
            ],
        )
    )


def memory_section(r: Results) -> str:
    rows = [[label, fmt_number(mb, 1)] for label, mb in r.memory.items()]
    return "#### Memory (RSS, MB)\n\n" + table(["process and state", "RSS MB"], rows)


def _per_1k_values(r: Results, key: str, metric: str) -> list[float]:
    cpu = r.values(key, metric)
    calls = r.values(key, "calls")
    return [c / n * 1000 if n > 0 else math.nan for c, n in zip(cpu, calls, strict=True)]


def _per_1k(r: Results, key: str, metric: str) -> Spread:
    return spread(_per_1k_values(r, key, metric))


def cpu_section(r: Results) -> str:
    rows = []
    for payload in PAYLOADS:
        for concurrency in (16, 64):
            for key, label in CONTENDERS.items():
                k = unary_key(key, payload, concurrency)
                rows.append(
                    [
                        f"{label}, {size_label(payload)} @{concurrency}",
                        fmt(_per_1k(r, k, "server_cpu_s"), 2),
                        fmt(_per_1k(r, k, "client_cpu_s"), 2),
                        fmt(_per_1k(r, k, "emulator_cpu_s"), 2),
                    ]
                )
    headers = ["run", "gateway s/1k calls", "load generator s/1k", "emulator s/1k"]
    return (
        "#### CPU per 1,000 calls (user + system seconds)\n\n"
        "The gateway column is the server process of that contender (sagewire, uvicorn, the echo "
        "server; none for the direct and raw callers, whose cost is all in the load generator).\n\n"
        + table(headers, rows)
    )


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("**met**" if met else "**not met**")


def _goal(name: str, target: str, value: Spread, digits: int, unit: str, met: bool) -> list[str]:
    return [name, target, fmt(value, digits, unit), _verdict(None if value.missing else met)]


def goals_section(r: Results) -> str:
    added = added_latency(r, PAYLOADS[0])
    added_256k = added_latency(r, PAYLOADS[1])
    ratio64 = throughput_ratio(r, "fastapi", PAYLOADS[0], 64)
    cpu = _per_1k(r, unary_key("sagewire", PAYLOADS[0], 16), "server_cpu_s")
    cpu_aioboto3 = _per_1k(r, unary_key("sagewire-aioboto3", PAYLOADS[0], 16), "server_cpu_s")
    lean_share = spread(
        paired_ratios(
            _per_1k_values(r, unary_key("sagewire", PAYLOADS[0], 16), "server_cpu_s"),
            _per_1k_values(r, unary_key("sagewire-aioboto3", PAYLOADS[0], 16), "server_cpu_s"),
        )
    )
    relay = spread(
        paired_ratios(
            r.values("parts/sagewire/1", "items_per_s"), r.values("parts/direct/1", "items_per_s")
        )
    )
    ttfp = spread(
        paired_differences(
            r.values("ttfp/sagewire", "first_p50_ms"), r.values("ttfp/direct", "first_p50_ms")
        )
    )
    rows = [
        _goal(
            "unary added latency p50 over direct aioboto3 (1 KB, @1)",
            f"≤ {GOAL_ADDED_LATENCY_MS} ms",
            added,
            2,
            " ms",
            added.median <= GOAL_ADDED_LATENCY_MS,
        ),
        _goal(
            "throughput ÷ FastAPI reference (1 KB, @64)",
            f"≥ {GOAL_THROUGHPUT_RATIO}×",
            ratio64,
            2,
            "×",
            ratio64.median >= GOAL_THROUGHPUT_RATIO,
        ),
        _goal(
            "sagewire CPU per 1,000 unary calls (1 KB, @16)",
            f"≤ {GOAL_CPU_PER_1K_S} s",
            cpu,
            2,
            " s",
            cpu.median <= GOAL_CPU_PER_1K_S,
        ),
        _goal(
            "added latency p50 over direct aioboto3 (256 KB JSON, @1)",
            f"≤ {GOAL_ADDED_LATENCY_256K_MS} ms",
            added_256k,
            2,
            " ms",
            added_256k.median <= GOAL_ADDED_LATENCY_256K_MS,
        ),
        _goal(
            "relayed parts/s ÷ direct reader (@1)",
            f"≥ {GOAL_PARTS_RATIO}×",
            relay,
            2,
            "×",
            relay.median >= GOAL_PARTS_RATIO,
        ),
        _goal(
            "time-to-first-part overhead p50 over direct",
            f"≤ {GOAL_TTFP_OVERHEAD_MS} ms",
            ttfp,
            2,
            " ms",
            ttfp.median <= GOAL_TTFP_OVERHEAD_MS,
        ),
        [
            "for comparison: CPU per 1,000 calls with aws.client=aioboto3 (1 KB, @16), "
            "and lean ÷ aioboto3",
            "—",
            f"{fmt(cpu_aioboto3, 2, ' s')}; {fmt(lean_share, 2, '×')}",
            "—",
        ],
    ]
    for key in REST_CONTENDERS:
        ratio = throughput_ratio(r, "fastapi", PAYLOADS[0], 64, key)
        rows.append(
            [
                f"{CONTENDERS[key]} throughput ÷ FastAPI reference (1 KB, @64; issue 11)",
                f"≥ {GOAL_REST_THROUGHPUT_RATIO}×",
                fmt(ratio, 2, "×"),
                _verdict(None if ratio.missing else ratio.median >= GOAL_REST_THROUGHPUT_RATIO),
            ]
        )
    return "#### Goals\n\n" + table(["goal", "target", "measured", "verdict"], rows)


def background_load(r: Results) -> Spread:
    """CPU used by processes outside the benchmark during measured windows, in % of one core."""
    shares = [
        run["foreign_cpu_s"] / run["elapsed_s"] * 100
        for runs in r.runs.values()
        for run in runs
        if run.get("elapsed_s") and "foreign_cpu_s" in run
    ]
    return spread(shares)


def errors_section(r: Results) -> str:
    lines = []
    for key, runs in sorted(r.runs.items()):
        for repeat, run in enumerate(runs):
            if not run:
                lines.append(f"- `{key}` repeat {repeat + 1}: no result (the run failed)")
            elif run.get("errors"):
                texts = "; ".join(run.get("error_texts", [])) or "?"
                lines.append(f"- `{key}` repeat {repeat + 1}: {run['errors']} errors ({texts})")
    lines += [f"- {note}" for note in r.notes]
    text = "#### Errors and notes\n\n" + ("\n".join(lines) if lines else "No call failed.")
    load = background_load(r)
    if not load.missing:
        text += (
            "\n\nOther processes on the machine (not part of the benchmark) used a median "
            f"{load.median:.0f} % of one core during the measured windows (max {load.high:.0f} %)."
        )
    return text


def render(r: Results, machine: Mapping[str, str], title: str = "Last recorded run") -> str:
    facts = "\n".join(f"- **{k}**: {v}" for k, v in machine.items())
    settings = "\n".join(f"- **{k}**: {v}" for k, v in r.settings.items())
    parts = [
        f"### {title}",
        "Cells are the median over repeats with the range (min–max) in brackets. "
        "`@N` is the number of concurrent calls.",
        "#### Machine\n\n" + facts,
        "#### Run\n\n" + settings,
        goals_section(r),
        *(unary_section(r, p) for p in PAYLOADS),
        ratios_section(r),
        open_loop_section(r),
        stream_section(r),
        memory_section(r),
        cpu_section(r),
        errors_section(r),
    ]
    return "\n\n".join(parts) + "\n"
