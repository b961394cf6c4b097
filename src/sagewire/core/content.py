"""Content-type helpers shared by transports."""

from __future__ import annotations


def is_json(content_type: str) -> bool:
    """True for application/json, */*+json and JSON Lines types."""
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media == "application/json"
        or media.endswith("+json")
        or media in ("application/jsonlines", "application/x-ndjson", "application/jsonl")
    )
