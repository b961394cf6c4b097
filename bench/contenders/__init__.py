"""The reference servers sagewire is measured against (see docs/benchmarks.md)."""
