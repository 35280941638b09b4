"""The exceptions of the `rookery` package: one class per gRPC status a caller handles.

Every failed call raises a `RookeryError` subclass chosen by the status code, so callers
write `except rookery.Unavailable:` instead of comparing codes; the original
`grpc.aio.AioRpcError` stays available as `.rpc_error` (and as `__cause__`).
"""

from __future__ import annotations

from typing import Optional

import grpc


class RookeryError(Exception):
    """A Rookery call failed. `code` is the gRPC status code (None for client-side errors)."""

    #: The status code this class stands for; subclasses set it.
    default_code: Optional[grpc.StatusCode] = None

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        rpc_error: Optional[grpc.aio.AioRpcError] = None,
    ) -> None:
        super().__init__(message)
        #: The gRPC status code, or None when the error arose in the client.
        self.code: Optional[grpc.StatusCode] = code if code is not None else self.default_code
        #: The server's message (the status details).
        self.details: str = message
        #: The original error from grpcio, when the error came from a call.
        self.rpc_error: Optional[grpc.aio.AioRpcError] = rpc_error

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else "CLIENT"
        return f"{name}: {self.details}"


class Cancelled(RookeryError):
    """The call was cancelled."""

    default_code = grpc.StatusCode.CANCELLED


class InvalidArgument(RookeryError):
    """Malformed or out-of-bounds input (empty key, TTL <= 0, value too large)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(RookeryError):
    """The call's deadline passed."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(RookeryError):
    """The named session, group or stream does not exist."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RookeryError):
    """Something to create exists already (a consumer group)."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(RookeryError):
    """The caller may not do this in this namespace."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RookeryError):
    """A limit was reached: Redis out of memory, a namespace's fair share, a cap."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(RookeryError):
    """The state does not allow the call, and retrying cannot help (a stale lease)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(RookeryError):
    """A concurrent change won (a version mismatch, a consumer name taken over): re-read, retry."""

    default_code = grpc.StatusCode.ABORTED


class Internal(RookeryError):
    """A bug in the server (or an answer this client does not understand)."""

    default_code = grpc.StatusCode.INTERNAL


class Unavailable(RookeryError):
    """The server or its Redis cannot be reached right now; a write may or may not have happened."""

    default_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(RookeryError):
    """The call carried no valid credentials."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class LockNotAcquired(RookeryError):
    """`Lock.hold` found the lock still held by others when its wait ended."""


class WaitExpired(RookeryError):
    """`Cache.get_or_load` waited its `max_wait` for another caller's load, which never came."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> RookeryError:
    """The `RookeryError` subclass for a failed call's status, keeping the original error."""
    code = error.code()
    cls = _BY_CODE.get(code, RookeryError)
    return cls(error.details() or code.name, code=code, rpc_error=error)
