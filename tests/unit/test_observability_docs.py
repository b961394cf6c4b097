"""docs/observability.md and the Grafana dashboard name only series sagewire exports, and the
docs name every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from sagewire.observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "observability.md"
DASHBOARD = REPO / "docs" / "grafana" / "sagewire-dashboard.json"
SERIES = re.compile(r"\b((?:grpc_server|sagewire|http_server)_[a-z_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def exported() -> dict[str, set[str]]:
    """Family name → the sample names a query may use."""
    families = Metrics(CollectorRegistry()).registry.collect()
    return {f.name: {f.name + suffix for suffix in SUFFIXES[f.type]} for f in families}


def sample_names() -> set[str]:
    return set().union(*exported().values())


def test_the_dashboard_parses_and_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs for name in SERIES.findall(expr)}
    assert used, "the dashboard queries nothing"
    assert used <= sample_names(), used - sample_names()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_docs_promql_names_only_exported_series() -> None:
    blocks = re.findall(r"```promql\n(.*?)```", DOC.read_text(), re.S)
    used = {name for block in blocks for name in SERIES.findall(block)}
    assert used
    assert used <= sample_names(), used - sample_names()


def test_the_docs_list_every_series() -> None:
    text = DOC.read_text()
    for family, samples in exported().items():
        assert any(f"`{name}`" in text for name in {family, *samples}), family
