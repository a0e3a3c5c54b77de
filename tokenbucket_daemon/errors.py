"""The daemon's exceptions: one root, each kind naming the gRPC status it maps to.

The names are plain strings so the sans-I/O core need not import grpc; the
servicers turn ``code`` into ``grpc.StatusCode[code]``.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Root of every error the daemon reports to a caller."""

    code = "INTERNAL"

    def __init__(self, what: str, value: object = None, hint: str = "",
                 errno_name: str = "") -> None:
        self.what, self.value, self.hint = what, value, hint
        # Symbolic errno ("ENOTEMPTY") when the error came from the file system; sent to
        # callers as trailing metadata because several errnos share one status code.
        self.errno_name = errno_name
        text = what if value is None else f"{what}: {value!r}"
        super().__init__(f"{text}; {hint}" if hint else text)


class InvalidArgument(DaemonError):
    code = "INVALID_ARGUMENT"


class NotFound(DaemonError):
    code = "NOT_FOUND"


class AlreadyExists(DaemonError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(DaemonError):
    code = "FAILED_PRECONDITION"


class PermissionDenied(DaemonError):
    code = "PERMISSION_DENIED"


class Unauthenticated(DaemonError):
    code = "UNAUTHENTICATED"


class ResourceExhausted(DaemonError):
    code = "RESOURCE_EXHAUSTED"
