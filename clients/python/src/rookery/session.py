"""The Session service's typed client, with helpers that read and write attributes as JSON.

Session IDs are secrets: this module never logs them, and neither should callers.
`session_hint(id)` gives the hint `list_by_subject` shows, to find "this device".
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional

from ._convert import Seconds, from_timestamp, optional_duration
from .errors import NotFound
from .v1 import session_pb2 as pb
from .v1.session_pb2_grpc import SessionStub

if TYPE_CHECKING:
    from ._client import Client


def json_attributes(values: Mapping[str, Any]) -> Dict[str, bytes]:
    """Attributes encoded as JSON, for `SessionClient.create` or `update(set=…)`."""
    return {name: json.dumps(value, separators=(",", ":")).encode() for name, value in values.items()}


def session_hint(session_id: str) -> str:
    """The hint `list_by_subject` shows for the session with this ID."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:8]


@dataclass(frozen=True)
class CreatedSession:
    """A created session."""

    #: Its ID: hand it to the end user (e.g. in a Secure, HttpOnly cookie); never log it.
    id: str
    idle_expires_at: datetime
    absolute_expires_at: datetime
    #: How many of the subject's sessions were evicted to respect its cap.
    evicted: int


@dataclass(frozen=True)
class Session:
    """A stored session."""

    subject: str
    attributes: Dict[str, bytes]
    #: Incremented by every update; pass it as `expected_version` for a safe read-modify-write.
    version: int
    created_at: datetime
    idle_expires_at: datetime
    absolute_expires_at: datetime

    def json(self, name: str, default: Any = None) -> Any:
        """Attribute `name` decoded from JSON; `default` if absent."""
        raw = self.attributes.get(name)
        return default if raw is None else json.loads(raw)


@dataclass(frozen=True)
class SessionSummary:
    """A session as listed for its subject: never its ID."""

    #: Compare with `session_hint(id)` to recognise a session.
    hint: str
    created_at: datetime
    idle_expires_at: datetime
    absolute_expires_at: datetime


@dataclass
class SessionUpdate:
    """Attribute changes for `SessionClient.update`, built with JSON or raw values."""

    set: Dict[str, bytes] = field(default_factory=dict)
    remove: List[str] = field(default_factory=list)
    expected_version: Optional[int] = None

    def set_json(self, name: str, value: Any) -> "SessionUpdate":
        """Sets attribute `name` to `value` as JSON."""
        self.set[name] = json.dumps(value, separators=(",", ":")).encode()
        return self


class SessionClient:
    """Typed calls to `rookery.v1.Session`; get it as `client.session`."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def _call(self, method: str, request: Any, idempotent: bool = False) -> Any:
        return await self._client.unary(SessionStub, method, request, idempotent=idempotent)

    async def create(
        self,
        subject: str,
        attributes: Optional[Mapping[str, bytes]] = None,
        *,
        idle_timeout: Optional[Seconds] = None,
        absolute_timeout: Optional[Seconds] = None,
        max_sessions: int = 0,
    ) -> CreatedSession:
        """Creates a session for `subject` (attributes as bytes; see `json_attributes`)."""
        request = pb.SessionCreateRequest(
            subject=subject,
            attributes=dict(attributes or {}),
            idle_timeout=optional_duration(idle_timeout),
            absolute_timeout=optional_duration(absolute_timeout),
            max_sessions=max_sessions,
        )
        r = await self._call("Create", request)
        return CreatedSession(
            r.id, from_timestamp(r.idle_expires_at), from_timestamp(r.absolute_expires_at), r.evicted
        )

    async def get(self, session_id: str, *, touch: bool = False) -> Optional[Session]:
        """Reads a session (None if unknown, expired or revoked); `touch` slides its idle
        expiry."""
        try:
            r = await self._call("Get", pb.SessionGetRequest(id=session_id, touch=touch), idempotent=True)
        except NotFound:
            return None
        s = r.session
        return Session(
            subject=s.subject,
            attributes=dict(s.attributes),
            version=s.version,
            created_at=from_timestamp(s.created_at),
            idle_expires_at=from_timestamp(s.idle_expires_at),
            absolute_expires_at=from_timestamp(s.absolute_expires_at),
        )

    async def update(
        self,
        session_id: str,
        update: Optional[SessionUpdate] = None,
        *,
        set: Optional[Mapping[str, bytes]] = None,
        remove: Iterable[str] = (),
        expected_version: Optional[int] = None,
    ) -> int:
        """Applies attribute changes (a `SessionUpdate`, or `set`/`remove` directly); with
        `expected_version`, a session changed since raises `Aborted`. Returns the new version."""
        update = update or SessionUpdate()
        values = {**update.set, **(set or {})}
        removed = [*update.remove, *remove]
        version = expected_version if expected_version is not None else update.expected_version
        request = pb.SessionUpdateRequest(id=session_id, set=values, remove=removed, expected_version=version)
        r = await self._call("Update", request)
        return int(r.version)

    async def rotate(self, session_id: str, *, grace: Optional[Seconds] = None) -> str:
        """Gives the session a new ID; the old one keeps working for `grace` (if given)."""
        r = await self._call("Rotate", pb.SessionRotateRequest(id=session_id, grace=optional_duration(grace)))
        return str(r.id)

    async def delete(self, session_id: str) -> bool:
        """Ends a session; False if there was none."""
        r = await self._call("Delete", pb.SessionDeleteRequest(id=session_id))
        return bool(r.deleted)

    async def list_by_subject(self, subject: str) -> List[SessionSummary]:
        """A subject's live sessions, most recently active first (hints, never IDs)."""
        r = await self._call(
            "ListBySubject", pb.SessionListBySubjectRequest(subject=subject), idempotent=True
        )
        return [
            SessionSummary(
                s.hint,
                from_timestamp(s.created_at),
                from_timestamp(s.idle_expires_at),
                from_timestamp(s.absolute_expires_at),
            )
            for s in r.sessions
        ]

    async def delete_by_subject(self, subject: str) -> int:
        """Ends every session of a subject ("log out everywhere"); returns how many."""
        r = await self._call(
            "DeleteBySubject", pb.SessionDeleteBySubjectRequest(subject=subject), idempotent=True
        )
        return int(r.deleted)
