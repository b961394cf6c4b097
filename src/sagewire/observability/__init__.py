"""Observability shared by every transport: the per-call record (calls), Prometheus metrics
(metrics, admin), what the core reports (signals), OpenTelemetry over OTLP (otel) and log
formats (logs). docs/observability.md describes what an operator sees.
"""
