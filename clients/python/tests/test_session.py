"""The Session client against a real server: sessions with JSON attributes, versions,
rotation, and a subject's sessions listed and ended together."""

from __future__ import annotations

import pytest

import rookery
from rookery import SessionUpdate, json_attributes, session_hint


async def test_sessions_with_json_attributes(client: rookery.Client) -> None:
    sessions = client.session
    created = await sessions.create(
        "ada", json_attributes({"cart": ["book"], "admin": False}), idle_timeout=600
    )
    session = await sessions.get(created.id, touch=True)
    assert session is not None and session.subject == "ada" and session.version == 1
    assert session.json("cart") == ["book"] and session.json("admin") is False
    assert session.json("missing", "none") == "none"
    version = await sessions.update(
        created.id, SessionUpdate(expected_version=1).set_json("cart", []), remove=["admin"]
    )
    assert version == 2
    # A stale version is refused instead of overwriting a concurrent change.
    with pytest.raises(rookery.Aborted):
        await sessions.update(created.id, set={"x": b"1"}, expected_version=1)
    updated = await sessions.get(created.id)
    assert updated is not None and updated.json("cart") == [] and "admin" not in updated.attributes

    rotated = await sessions.rotate(created.id)
    assert rotated != created.id and await sessions.get(created.id) is None
    other = await sessions.create("ada")
    listed = await sessions.list_by_subject("ada")
    assert sorted(s.hint for s in listed) == sorted([session_hint(rotated), session_hint(other.id)])
    assert await sessions.delete(other.id)
    assert not await sessions.delete(other.id)
    assert await sessions.delete_by_subject("ada") == 1
    assert await sessions.get(rotated) is None
