"""Who may change what lies under a root. Everyone who can open the control socket may read
(the socket file's mode and group decide that); the methods that write under a root (a link
repaired or moved to the trash, one put back) can be kept to a stricter group,
`[control] write_group`. Judged by the kernel's word on the caller (`Peer`), never the client's."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass

from importd.api.peer import Peer


@dataclass(frozen=True)
class WriteAccess:
    methods: frozenset[str]
    group: Callable[[], str | None]  # read at each request: a reload (SIGHUP) changes it

    def denial(self, method: str, peer: Peer) -> str | None:
        """Why `peer` may not call `method`, or None when it may."""
        group = self.group()
        if method not in self.methods or group is None:
            return None
        if peer.uid is None or peer.gid is None:
            return f"{method} is kept to group {group!r}, and the kernel did not say who is asking"
        if peer.uid in (0, os.getuid()) or member(peer.uid, peer.gid, group):
            return None
        return (
            f"{method} changes files under a root and is kept to group {group!r}; "
            f"user {peer.user()} (uid {peer.uid}) is not in it (usermod -aG {group} {peer.user()})"
        )


def member(uid: int, gid: int, group: str) -> bool:
    """Is the user in the group: as its primary group (the connection's gid), or as a listed
    member in the group database (what a login's supplementary groups come from)?"""
    try:
        wanted = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if gid == wanted:
        return True
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return wanted in os.getgrouplist(name, gid)
