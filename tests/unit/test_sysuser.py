"""
Tests for the boot-time system user (config.md §4.1), with the machine faked.
"""

from __future__ import annotations

import pwd

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import config_from_dict
from wings_twisted.sysuser import Host, SystemUserError, resolve_system_user

from ..support import TOKEN


def entry(name: str, uid: int, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", "/", "/usr/sbin/nologin"))


class FakeMachine:
    """
    A user database and a command runner.
    """

    def __init__(self, *, root: bool = True, users: dict | None = None, os_release: str = "ID=debian\n",
                 alpine: bool = False, create_fails: bool = False) -> None:
        self.users = dict(users or {})
        self.commands: list[list[str]] = []
        self.root = root
        self.os_release = os_release
        self.alpine = alpine
        self.create_fails = create_fails

    def host(self) -> Host:
        def getpwnam(name: str) -> pwd.struct_passwd:
            if name not in self.users:
                raise KeyError(name)
            return entry(name, *self.users[name])

        def getpwuid(uid: int) -> pwd.struct_passwd:
            for name, (u, g) in self.users.items():
                if u == uid:
                    return entry(name, u, g)
            raise KeyError(uid)

        def run(argv) -> int:
            self.commands.append(list(argv))
            if self.create_fails:
                return 1
            if argv[0] in ("useradd", "adduser"):
                self.users[argv[-1]] = (997, 996)
            return 0

        return Host(getpwnam=getpwnam, getpwuid=getpwuid, geteuid=lambda: 0 if self.root else 1000,
                    getuid=lambda: 0 if self.root else 1000, getgid=lambda: 0 if self.root else 1000,
                    run=run, exists=lambda path: self.alpine and path == "/etc/alpine-release",
                    read=lambda path: self.os_release)


def config(**system):
    return config_from_dict({"token": TOKEN, "system": system})


class SystemUserTests(SynchronousTestCase):
    """
    ``resolve_system_user``.
    """

    def ids(self, c) -> tuple[str, int, int]:
        return c.system.username, c.system.user.uid, c.system.user.gid

    def test_existing_user_overrides_file_ids(self) -> None:
        """
        An existing ``system.username`` gives its uid/gid, whatever the file
        said; nothing is created.
        """
        machine = FakeMachine(users={"pterodactyl": (988, 988)})
        c = resolve_system_user(config(user={"uid": 5, "gid": 5}), host=machine.host())
        self.assertEqual(self.ids(c), ("pterodactyl", 988, 988))
        self.assertEqual(machine.commands, [])

    def test_missing_user_created_as_root(self) -> None:
        """
        As root, a missing user is created as a system account without home
        or shell, then looked up.
        """
        machine = FakeMachine()
        c = resolve_system_user(config(username="wings"), host=machine.host())
        self.assertEqual(machine.commands, [["useradd", "--system", "--no-create-home", "--shell",
                                             "/usr/sbin/nologin", "wings"]])
        self.assertEqual(self.ids(c), ("wings", 997, 996))

    def test_alpine(self) -> None:
        """
        On Alpine the group and user are made with addgroup/adduser.
        """
        machine = FakeMachine(alpine=True)
        resolve_system_user(config(), host=machine.host())
        self.assertEqual(machine.commands, [
            ["addgroup", "-S", "pterodactyl"],
            ["adduser", "-S", "-D", "-H", "-G", "pterodactyl", "-s", "/sbin/nologin", "pterodactyl"]])

    def test_creation_failure(self) -> None:
        """
        A failing ``useradd`` is a one-line error.
        """
        machine = FakeMachine(create_fails=True)
        error = self.assertRaises(SystemUserError, resolve_system_user, config(), host=machine.host())
        self.assertIn("could not create the system user 'pterodactyl'", str(error))

    def test_not_root_uses_own_ids(self) -> None:
        """
        Without root nothing is created: the daemon's own ids are used.
        """
        machine = FakeMachine(root=False)
        c = resolve_system_user(config(), host=machine.host())
        self.assertEqual(self.ids(c), ("pterodactyl", 1000, 1000))
        self.assertEqual(machine.commands, [])

    def test_rootless(self) -> None:
        """
        Rootless mode takes the running user's name and ids, creating nothing.
        """
        machine = FakeMachine(root=False, users={"dev": (1000, 1000)})
        c = resolve_system_user(config(user={"rootless": {"enabled": True}}), host=machine.host())
        self.assertEqual(self.ids(c), ("dev", 1000, 1000))
        self.assertEqual(machine.commands, [])

    def test_distroless(self) -> None:
        """
        The official image's environment variables decide, with defaults.
        """
        machine = FakeMachine(os_release='NAME="Distroless"\nID=distroless\n')
        c = resolve_system_user(config(), host=machine.host(),
                                environ={"WINGS_USERNAME": "ptero", "WINGS_UID": "1001"})
        self.assertEqual(self.ids(c), ("ptero", 1001, 988))
        self.assertRaises(SystemUserError, resolve_system_user, config(), host=machine.host(),
                          environ={"WINGS_UID": "x"})
        self.assertEqual(machine.commands, [])
