"""Redacting a route's default custom attributes for ModelService."""

from __future__ import annotations

import pytest

from sagewire.core.redaction import redact_custom_attributes


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", ""),
        ("a=1", "a=<redacted>"),
        ("api_key=s3cret;tenant=acme", "api_key=<redacted>;tenant=<redacted>"),
        ("k1=v1, k2=v2", "k1=<redacted>;k2=<redacted>"),
        ("token=a=b", "token=<redacted>"),
        ("Bearer abc.def", "<redacted>"),
        ("=value", "<redacted>"),
        ("bare-secret", "<redacted>"),
        ("x y=1", "<redacted>"),
        (";;a=1;;", "a=<redacted>"),
        ("k" * 65 + "=v", "<redacted>"),
        ("X-Amzn-Key:v2=1", "X-Amzn-Key:v2=<redacted>"),
    ],
)
def test_values_never_show(value: str, shown: str) -> None:
    assert redact_custom_attributes(value) == shown
