"""What of a route's configuration callers may see: its default custom attributes redacted.

ModelService answers every caller, and operators keep credentials in CustomAttributes (an API
key for the container, a tenant token), so their values are never shown. What a caller can use
is which keys the route sends: each `;`- or `,`-separated item `key=value` becomes
`key=<redacted>`; an item that is not that shape, or whose key is not a plain name (a bare
token, a `Bearer …` value), becomes `<redacted>` whole.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def redact_custom_attributes(value: str) -> str:
    """`value` with every value hidden, items joined with ";"; "" for "". Never returns any
    character of a value."""
    items = []
    for item in (part.strip() for part in re.split(r"[;,]", value)):
        if not item:
            continue
        key, equals, _ = item.partition("=")
        key = key.strip()
        items.append(f"{key}={REDACTED}" if equals and _KEY.fullmatch(key) else REDACTED)
    return ";".join(items)
