"""Demo models and the re-chunker, without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagewire.emulator import ModelFailure, ModelRequest
from sagewire.emulator.models import EchoModel, Rechunker, TokensModel


def request(body: bytes, **kwargs: str) -> ModelRequest:
    return ModelRequest(endpoint="e", variant="AllTraffic", body=body, streaming=True, **kwargs)


@given(
    data=st.lists(st.binary(max_size=100), max_size=10),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4),
)
def test_rechunker_keeps_every_byte_and_cycles_sizes(data: list[bytes], sizes: list[int]) -> None:
    rechunker = Rechunker(sizes)
    parts = [part for chunk in data for part in rechunker.feed(chunk)]
    assert [len(p) for p in parts] == [sizes[i % len(sizes)] for i in range(len(parts))]
    assert b"".join(parts) + rechunker.flush() == b"".join(data)


def test_rechunker_refuses_non_positive_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        Rechunker([3, 0])


async def test_tokens_lines_and_part_sizes() -> None:
    reply = await TokensModel().invoke(request(json.dumps({"text": " a  bb\tccc "}).encode()))
    parts = [part async for part in reply.chunks]
    assert reply.content_type == "application/jsonlines"
    assert b"".join(parts).decode().splitlines() == [
        '{"token": "a", "index": 0}',
        '{"token": "bb", "index": 1}',
        '{"token": "ccc", "index": 2}',
        '{"done": true, "count": 3}',
    ]
    assert [len(p) for p in parts] == [7, 40, 3, 61]  # the cycle, then the flushed rest


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", b'{"txt": "x"}', b'{"text": "x", "delay_ms": -1}', b'{"text": 1}'],
)
async def test_tokens_rejects_bad_requests_like_a_container_400(body: bytes) -> None:
    with pytest.raises(ModelFailure) as caught:
        await TokensModel().invoke(request(body))
    assert caught.value.status == 400


async def test_echo_splits_large_bodies_and_echoes_metadata() -> None:
    reply = await EchoModel(part_size=4).invoke(
        request(b"0123456789", content_type="text/x", custom_attributes="k=v")
    )
    assert [part async for part in reply.chunks] == [b"0123", b"4567", b"89"]
    assert (reply.content_type, reply.custom_attributes) == ("text/x", "k=v")
