"""Who may call the methods that write under a root, with `[control] write_group`."""

from __future__ import annotations

import grp
import os
import pwd

from importd.api.access import WriteAccess, member
from importd.api.peer import Peer

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def access(group: str | None) -> WriteAccess:
    return WriteAccess(frozenset({"restore"}), lambda: group)


def test_without_a_group_everyone_may() -> None:
    assert access(None).denial("restore", Peer(NOBODY.pw_uid, NOBODY.pw_gid, 1)) is None


def test_reads_are_never_judged() -> None:
    assert access("root").denial("status", Peer(NOBODY.pw_uid, NOBODY.pw_gid, 1)) is None


def test_root_the_daemons_user_and_members_may_others_not() -> None:
    a = access("root")
    assert a.denial("restore", Peer(0, 0, 1)) is None
    assert a.denial("restore", Peer(os.getuid(), os.getgid(), 1)) is None
    denied = a.denial("restore", Peer(NOBODY.pw_uid, NOBODY.pw_gid, 1))
    assert denied is not None and "'root'" in denied and "nobody" in denied and "usermod -aG root" in denied
    # The primary group (the connection's gid) counts.
    assert access(NOGROUP).denial("restore", Peer(NOBODY.pw_uid, NOBODY.pw_gid, 1)) is None
    unknown = a.denial("restore", Peer())
    assert unknown is not None and "did not say" in unknown


def test_member() -> None:
    assert member(NOBODY.pw_uid, NOBODY.pw_gid, NOGROUP)
    assert not member(NOBODY.pw_uid, NOBODY.pw_gid, "root")
    assert not member(NOBODY.pw_uid, NOBODY.pw_gid, "no-such-group-here")
