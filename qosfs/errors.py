"""qosfs's exceptions, under one root."""

from __future__ import annotations


class QosfsError(Exception):
    """Root of every error qosfs raises."""


class UsageError(QosfsError):
    """Bad command-line or configuration input; the message says what to do."""


class RemoteError(QosfsError):
    """A daemon call failed; ``errno`` is what the calling program should see."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
