"""
The system user that owns server volumes (config.md §4.1), resolved once at
boot the way upstream does it:

* **rootless** (``system.user.rootless.enabled``): no user is created; the
  name, uid and gid are those of the user running the daemon;
* **distroless** (``ID=distroless`` in os-release, the official container
  image): ``WINGS_USERNAME`` / ``WINGS_UID`` / ``WINGS_GID`` (defaults
  ``pterodactyl`` / 988 / 988);
* otherwise ``system.username`` is looked up and, when missing and the daemon
  is root, created as a system account without a home or login shell
  (``useradd --system --no-create-home --shell /usr/sbin/nologin``; on Alpine
  ``addgroup -S`` + ``adduser -S -D -H -G … -s /sbin/nologin``).  Its uid and
  gid replace ``system.user.uid/gid`` from the file, as upstream overwrites
  them.

A daemon that is not root and finds no such user (a development run as an
ordinary user) uses its own uid and gid and says so in the log.  Every
effect is injected so the rules are tested without touching the machine.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from twisted.logger import Logger

from .config import Config, replace_values

log = Logger()


class SystemUserError(Exception):
    """
    The system user could not be found or created (one readable line).
    """


@dataclass(frozen=True)
class Host:
    """
    What the resolution needs from the machine.
    """

    getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam
    getpwuid: Callable[[int], pwd.struct_passwd] = pwd.getpwuid
    geteuid: Callable[[], int] = os.geteuid
    getuid: Callable[[], int] = os.getuid
    getgid: Callable[[], int] = os.getgid
    run: Callable[[Sequence[str]], int] = lambda argv: subprocess.run(
        list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60).returncode
    exists: Callable[[str], bool] = os.path.exists
    read: Callable[[str], str] = lambda path: open(path, encoding="utf-8").read()


def _os_release_id(host: Host) -> str:
    try:
        text = host.read("/etc/os-release")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ID":
            return value.strip().strip('"')
    return ""


def create_commands(username: str, host: Host) -> list[list[str]]:
    """
    The commands that create ``username`` as a system account.
    """
    if host.exists("/etc/alpine-release"):
        return [["addgroup", "-S", username],
                ["adduser", "-S", "-D", "-H", "-G", username, "-s", "/sbin/nologin", username]]
    return [["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", username]]


def resolve_system_user(config: Config, *, environ: Mapping[str, str] | None = None,
                        host: Host | None = None) -> Config:
    """
    ``config`` with ``system.username`` and ``system.user.uid/gid`` resolved
    per the module docstring.

    :raises SystemUserError: the user is missing and could not be created, or
        the distroless variables are not numbers.
    """
    host = host or Host()
    environ = os.environ if environ is None else environ
    system = config.system
    if system.user.rootless.enabled:
        uid, gid = host.getuid(), host.getgid()
        try:
            name = host.getpwuid(uid).pw_name
        except KeyError:
            name = system.username
        return _with(config, name, uid, gid)
    if _os_release_id(host) == "distroless":
        try:
            uid = int(environ.get("WINGS_UID", "988"))
            gid = int(environ.get("WINGS_GID", "988"))
        except ValueError:
            raise SystemUserError("WINGS_UID and WINGS_GID must be numbers")
        return _with(config, environ.get("WINGS_USERNAME", "pterodactyl"), uid, gid)
    name = system.username
    try:
        entry = host.getpwnam(name)
    except KeyError:
        if host.geteuid() != 0:
            uid, gid = host.getuid(), host.getgid()
            log.warn("System user {name} does not exist and the daemon is not root: volumes will "
                     "be owned by uid {uid}, gid {gid}", name=name, uid=uid, gid=gid)
            return _with(config, name, uid, gid)
        for argv in create_commands(name, host):
            if host.run(argv) != 0:
                raise SystemUserError("could not create the system user {!r} with {}".format(
                    name, argv[0]))
        try:
            entry = host.getpwnam(name)
        except KeyError:
            raise SystemUserError("the system user {!r} is still missing after creating it".format(name))
        log.info("Created the system user {name} (uid {uid})", name=name, uid=entry.pw_uid)
    return _with(config, name, entry.pw_uid, entry.pw_gid)


def _with(config: Config, name: str, uid: int, gid: int) -> Config:
    return replace_values(config, {"system.username": name, "system.user.uid": uid,
                                   "system.user.gid": gid})
