"""The lean path's amz-sdk-invocation-id: a random version-4 UUID written as botocore writes
`str(uuid.uuid4())` (tests/integration/test_lean_conformance.py checks its shape on the wire)."""

from __future__ import annotations

import itertools
import uuid

from sagewire.aws.lean import invocation_id


def test_invocation_ids_are_random_version_4_uuids_as_uuid4_writes_them() -> None:
    ids = [invocation_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value  # lower-case hex, 8-4-4-4-12
    # Every other bit varies: the fixed ones are only the version and variant bits.
    fixed = ~0
    for a, b in itertools.pairwise(ids):
        fixed &= ~(uuid.UUID(a).int ^ uuid.UUID(b).int)
    version_and_variant = (0xF << 76) | (0x3 << 62)
    assert fixed & ((1 << 128) - 1) == version_and_variant
