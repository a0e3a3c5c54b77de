"""The credentials a data-plane request is served with: the calling process's uid, gid
and supplementary groups, as the node agent (qosfs) read them from the kernel.

Pure data and its bounds, shared by the client library, qosfs and the daemon; the daemon
acts as a caller with :mod:`tokenbucket_daemon.server.fsid`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbucket_daemon.errors import InvalidArgument

# Supplementary groups accepted per request. Linux allows 65536, but a request carries
# them on every call, and sites put users in a few dozen at most; 64 is what NFS's
# AUTH_SYS would not even reach (16), with room to spare.
MAX_GROUPS = 64
# (uid_t)-1 means "leave unchanged" to chown and "query" to setfsuid: never an identity.
NO_ID = 0xFFFFFFFF


def _check_id(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < NO_ID:
        raise InvalidArgument(f"caller {what} out of range", value,
                              f"pass a {what} between 0 and {NO_ID - 1}")
    return value


@dataclass(frozen=True)
class Caller:
    """A process's file system identity: uid, primary gid, supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def checked(self) -> Caller:
        """This caller if every id is valid and the groups are within bounds, else
        :class:`InvalidArgument` with a one-line message."""
        _check_id("uid", self.uid)
        _check_id("gid", self.gid)
        if len(self.groups) > MAX_GROUPS:
            raise InvalidArgument(f"caller has more than {MAX_GROUPS} supplementary groups",
                                  len(self.groups),
                                  f"send at most {MAX_GROUPS} (the daemon's bound)")
        for g in self.groups:
            _check_id("group id", g)
        return self
