"""The daemon's exceptions: one root, each kind naming the gRPC status it maps to.

The names are plain strings so the sans-I/O core need not import grpc; the server's
error interceptor (:mod:`tokenbucket_daemon.server.interceptors`) turns ``code`` into
``grpc.StatusCode[code]``. Messages are bounded: a value a caller sent (a path, a job id)
is cut to :data:`MAX_VALUE` characters, a whole message to :data:`MAX_MESSAGE`, so no
input can make a status larger than gRPC accepts or a log line megabytes long.

:data:`ERRNO_STATUS` is the one table from a file system errno to the error (and so the
status code) a caller gets; ``docs/errors.md`` is its copy for readers.
"""

from __future__ import annotations

import errno as _errno

# A caller's value inside a message, and a whole message, in characters. gRPC refuses
# status details above ~16 KiB, and an operator reads the first line anyway.
MAX_VALUE = 200
MAX_MESSAGE = 1024


def shorten(text: str, limit: int = MAX_VALUE) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def short_repr(value: object, limit: int = MAX_VALUE) -> str:
    """``repr(value)`` of at most about ``limit`` characters; a long str or bytes is cut
    before it is repr'd, so a 3 MB path costs no 3 MB copy."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}...({len(value)} {unit})"
    return shorten(repr(value), limit)


class DaemonError(Exception):
    """Root of every error the daemon reports to a caller."""

    code = "INTERNAL"

    def __init__(self, what: str, value: object = None, hint: str = "",
                 errno_name: str = "") -> None:
        self.what, self.value, self.hint = what, value, hint
        # Symbolic errno ("ENOTEMPTY") when the error came from the file system; sent to
        # callers as trailing metadata because several errnos share one status code.
        self.errno_name = errno_name
        text = what if value is None else f"{what}: {short_repr(value)}"
        super().__init__(shorten(f"{text}; {hint}" if hint else text, MAX_MESSAGE))


class InvalidArgument(DaemonError):
    code = "INVALID_ARGUMENT"


class OutOfRange(DaemonError):
    code = "OUT_OF_RANGE"


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


class Unavailable(DaemonError):
    code = "UNAVAILABLE"


class DeadlineExceeded(DaemonError):
    code = "DEADLINE_EXCEEDED"


class Aborted(DaemonError):
    code = "ABORTED"


# errno name -> (error class, what the caller can do). Names, not numbers, so the table
# reads the same on every architecture; names this platform lacks are skipped.
_TABLE: dict[str, tuple[type[DaemonError], str]] = {
    "ENOENT": (NotFound, "check the path; parent directories must already exist"),
    "EEXIST": (AlreadyExists, "choose another name or remove the existing entry first"),
    "ENOTDIR": (FailedPrecondition, "a component of the path is not a directory; fix the "
                                    "path"),
    "EISDIR": (FailedPrecondition, "the path is a directory; name a file instead"),
    "ENOTEMPTY": (FailedPrecondition, "remove the directory's entries first"),
    "ELOOP": (FailedPrecondition, "too many symbolic links, or a link where none may be; "
                                  "fix the links in the path"),
    "EXDEV": (FailedPrecondition, "source and destination are on different file systems "
                                  "inside the tier; copy instead"),
    "EBUSY": (FailedPrecondition, "the entry is in use (a mount point?); try another"),
    "ETXTBSY": (FailedPrecondition, "the file is being executed; try later"),
    "ENXIO": (FailedPrecondition, "not a regular file or directory; the daemon serves "
                                  "those only"),
    "ENODEV": (FailedPrecondition, "not a regular file or directory; the daemon serves "
                                   "those only"),
    "EOPNOTSUPP": (FailedPrecondition, "the tier's file system does not support this on "
                                       "that entry"),
    "ENOSYS": (FailedPrecondition, "the tier's file system does not support this"),
    "ENOTTY": (FailedPrecondition, "the tier's file system does not support this"),
    "EACCES": (PermissionDenied, "the caller lacks permission; check the owner and mode "
                                 "of the path and its directories"),
    "EPERM": (PermissionDenied, "only the owner (or root) may do this; check the path's "
                                "owner"),
    "EROFS": (PermissionDenied, "the tier is mounted read-only"),
    "ENAMETOOLONG": (InvalidArgument, "use at most 4096 bytes per path and 255 per name"),
    "EINVAL": (InvalidArgument, "the file system refused the arguments (e.g. a directory "
                                "moved into itself); fix the request"),
    "EFBIG": (OutOfRange, "the offset or size is beyond what the tier's files can hold"),
    "EOVERFLOW": (OutOfRange, "the value does not fit the file system's range"),
    "ERANGE": (OutOfRange, "the value does not fit the file system's range"),
    "ENOSPC": (ResourceExhausted, "free space on the tier or use another tier"),
    "EDQUOT": (ResourceExhausted, "free quota on the tier or use another tier"),
    "EMFILE": (ResourceExhausted, "the daemon has too many files open; retry later"),
    "ENFILE": (ResourceExhausted, "the node has too many files open; retry later"),
    "ENOMEM": (ResourceExhausted, "the storage node is out of memory; retry later"),
    "ENOBUFS": (ResourceExhausted, "the storage node is out of buffers; retry later"),
    "EMLINK": (ResourceExhausted, "the directory or file has too many links"),
    "EAGAIN": (ResourceExhausted, "the resource is busy; retry later"),
    "EINTR": (Unavailable, "the call was interrupted; retry"),
    "EIO": (Unavailable, "the tier's device reported an I/O error; tell the storage "
                         "node's operator"),
    "ESTALE": (Unavailable, "the tier's network file system lost the file; retry"),
    "ETIMEDOUT": (Unavailable, "the tier's storage timed out; retry later"),
    "ENOTCONN": (Unavailable, "the tier's storage is not connected; tell the operator"),
    "EHOSTDOWN": (Unavailable, "the tier's storage is down; tell the operator"),
    "EDEADLK": (Aborted, "a lock would deadlock; retry"),
    "ECANCELED": (Aborted, "the operation was cancelled; retry"),
    # A descriptor or address the daemon passed was wrong: its own bug, never the caller's.
    "EBADF": (DaemonError, "a bug in the daemon; report it with the daemon's log"),
    "EFAULT": (DaemonError, "a bug in the daemon; report it with the daemon's log"),
}
# Every other errno: the tier refused for a reason of its own, in its current state.
OTHER_ERRNO: tuple[type[DaemonError], str] = (
    FailedPrecondition, "the tier's file system refused; see the daemon's log")

_LISTED = {getattr(_errno, name): entry for name, entry in _TABLE.items()
           if hasattr(_errno, name)}
ERRNO_STATUS: dict[int, tuple[type[DaemonError], str]] = {
    num: _LISTED.get(num, OTHER_ERRNO) for num in _errno.errorcode}


def errno_error(num: int | None) -> tuple[type[DaemonError], str]:
    """The error class and hint for a file system errno (0 or unknown: :data:`OTHER_ERRNO`)."""
    return ERRNO_STATUS.get(num or 0, OTHER_ERRNO)


def is_expected_errno(num: int | None) -> bool:
    """True for the errnos listed in the table as the caller's business; the others (not
    listed, or a daemon bug) are worth an operator's attention."""
    entry = _LISTED.get(num or 0)
    return entry is not None and entry[0] is not DaemonError
