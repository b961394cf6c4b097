"""Stateful sessions conformance: a plain aioboto3 client against the emulator's `chat` model."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sagewire.emulator import RunningEmulator
from sagewire.emulator.sessions import SessionTable, parse_new_session

OPEN = json.dumps({"requestType": "NEW_SESSION"})
CLOSE = json.dumps({"requestType": "CLOSE"})


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


async def open_session(client: Any) -> str:
    response = await client.invoke_endpoint(
        EndpointName="chat", Body=OPEN, ContentType="application/json", SessionId="NEW_SESSION"
    )
    await response["Body"].read()
    session_id, _ = parse_new_session(response["NewSessionId"])
    return session_id


async def turn(client: Any, text: str, session_id: str | None = None) -> list[dict[str, Any]]:
    extra = {"SessionId": session_id} if session_id else {}
    response = await client.invoke_endpoint(
        EndpointName="chat", Body=json.dumps({"text": text}), **extra
    )
    return lines(await response["Body"].read())


async def streamed_turn(client: Any, text: str, session_id: str) -> list[dict[str, Any]]:
    response = await client.invoke_endpoint_with_response_stream(
        EndpointName="chat", Body=json.dumps({"text": text}), SessionId=session_id
    )
    body = b"".join([event["PayloadPart"]["Bytes"] async for event in response["Body"]])
    return lines(body)


async def test_new_session_answers_id_and_expiry(client: Any, emulator: RunningEmulator) -> None:
    response = await client.invoke_endpoint(EndpointName="chat", Body=OPEN, SessionId="NEW_SESSION")
    assert lines(await response["Body"].read()) == [{"opened": True}]
    header = response["NewSessionId"]
    session_id, expires = parse_new_session(header)
    assert header.startswith(f"{session_id}; Expires=")
    assert header.endswith("Z")
    assert datetime.fromisoformat(header.split("Expires=")[1])  # an ISO time
    assert expires is not None
    assert 19 * 60 < expires - time.time() <= 20 * 60
    assert emulator.sessions("chat").live_ids() == [session_id]


async def test_later_calls_reach_the_same_session_state(client: Any) -> None:
    session_id = await open_session(client)
    first = await turn(client, "hello there", session_id)
    assert first[0] == {"turn": 1, "previous": None}
    assert first[1:] == [
        {"token": "hello", "index": 0},
        {"token": "there", "index": 1},
        {"done": True, "turn": 1},
    ]
    # The response stream reaches the same state as InvokeEndpoint.
    second = await streamed_turn(client, "how are you", session_id)
    assert second[0] == {"turn": 2, "previous": "hello there"}
    third = await turn(client, "bye", session_id)
    assert third[0] == {"turn": 3, "previous": "how are you"}
    # Another session has its own memory.
    other = await open_session(client)
    assert (await turn(client, "x", other))[0] == {"turn": 1, "previous": None}


async def test_a_turn_sent_with_new_session_opens_and_is_turn_one(client: Any) -> None:
    response = await client.invoke_endpoint(
        EndpointName="chat", Body=json.dumps({"text": "hi"}), SessionId="NEW_SESSION"
    )
    assert lines(await response["Body"].read())[0] == {"turn": 1, "previous": None}
    session_id, _ = parse_new_session(response["NewSessionId"])
    assert (await turn(client, "again", session_id))[0] == {"turn": 2, "previous": "hi"}


async def test_without_a_session_every_turn_is_the_first(client: Any) -> None:
    assert (await turn(client, "a"))[0] == {"turn": 1, "previous": None}
    assert (await turn(client, "b"))[0] == {"turn": 1, "previous": None}


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
async def test_unknown_session_id_is_rejected(
    client: Any, emulator: RunningEmulator, streaming: bool
) -> None:
    call = streamed_turn if streaming else turn
    with pytest.raises(ClientError) as caught:
        await call(client, "x", "no-such-session")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == (
        "Invalid session ID: session no-such-session of endpoint chat does not exist or was closed."
    )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert emulator.sessions("chat").counters.rejected == 1


async def test_expired_session_id_is_rejected(client: Any, emulator: RunningEmulator) -> None:
    session_id = await open_session(client)
    await turn(client, "x", session_id)
    emulator.sessions("chat").expire(session_id)
    with pytest.raises(ClientError) as caught:
        await turn(client, "y", session_id)
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "has expired" in caught.value.response["Error"]["Message"]
    assert not emulator.sessions("chat").is_live(session_id)


async def test_close_answers_closed_session_id(client: Any, emulator: RunningEmulator) -> None:
    session_id = await open_session(client)
    await turn(client, "one", session_id)
    response = await client.invoke_endpoint(EndpointName="chat", Body=CLOSE, SessionId=session_id)
    assert response["ClosedSessionId"] == session_id
    assert lines(await response["Body"].read()) == [{"closed": True, "turns": 1}]
    assert emulator.sessions("chat").counters.closed == 1
    with pytest.raises(ClientError) as caught:
        await turn(client, "two", session_id)
    assert "does not exist or was closed" in caught.value.response["Error"]["Message"]


async def test_malformed_turn_is_a_model_error(client: Any) -> None:
    session_id = await open_session(client)
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="chat", Body=b"[1]", SessionId=session_id)
    assert caught.value.response["Error"]["Code"] == "ModelError"
    assert caught.value.response["OriginalStatusCode"] == 400
    # A rejected turn is not remembered.
    assert (await turn(client, "ok", session_id))[0] == {"turn": 1, "previous": None}


async def test_open_needs_new_session(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="chat", Body=OPEN)
    assert caught.value.response["OriginalStatusCode"] == 400


def test_table_parses_expiry_and_forgets_closed_sessions() -> None:
    now = [1_000.0]
    table = SessionTable(clock=lambda: now[0])
    table.learn("abc; Expires=1970-01-01T00:20:00Z")  # 1200 s after the epoch
    assert table.is_live("abc")
    now[0] = 1_200.0
    assert not table.is_live("abc")
    table.learn("def")  # no expiry: lives until closed
    table.forget("def")
    assert table.live_ids() == []
    assert (table.counters.opened, table.counters.closed) == (2, 1)
