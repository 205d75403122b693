"""
The bubblewrap jail egg install scripts run in (lifecycle.md §16.2, §21.4),
built to be a boundary between a hostile install script and the node.

What the script gets:

* the server's uid/gid (never root: a server user of uid 0 is replaced by
  ``nobody``, 65534), no capabilities (``--cap-drop ALL``), a new session
  (no TIOCSTI into the daemon's terminal), its own user, PID, IPC, UTS
  (hostname ``installer``) and, where possible, cgroup namespaces;
* a fresh root holding only what an installer needs, read-only: ``/usr``,
  ``/bin``, ``/sbin``, ``/lib*`` (as the host has them, symlinks kept), the
  TLS trust store (``/etc/ssl``, ``/etc/ca-certificates``, ``/etc/pki``),
  ``/etc/alternatives``, the loader cache, and the name files
  (``passwd``, ``group``, ``nsswitch.conf``, ``hosts``, ``resolv.conf``,
  ``localtime``...).  Never ``/etc/pterodactyl``, ``system.root_directory``,
  other volumes or any of the daemon's data;
* the volume read-write at ``/mnt/server``, its script read-only at
  ``/mnt/install``, a private ``/tmp`` (``HOME``), fresh ``/dev`` and
  ``/proc``;
* its own network namespace.  With ``slirp4netns`` (Debian package
  ``slirp4netns``) it has outbound access through a user-mode NAT with the
  host's loopback disabled (``--disable-host-loopback``): it can download,
  but cannot reach ``127.0.0.1`` of the host, where the node API and local
  databases listen; DNS goes to slirp's resolver (``10.0.2.3``).  Without it
  the namespace has only its own loopback (no network) unless the operator
  chose ``install_network: host``.

``environment.process.install_network`` picks the network: ``auto``
(slirp4netns when installed, else none), ``slirp4netns`` (required: the
install fails without it), ``none``, ``host`` (the host's network, loopback
included: the script can reach every service of the node that listens
there; documented as unsafe).

How it is run: the launcher (``launcher.py``) starts ``HELPER`` with the
daemon's interpreter, still with the daemon's privileges.  The helper forks
bubblewrap after dropping to the install user (so bwrap runs unprivileged in
a user namespace, and files written to the volume belong to the server's
user), reads the sandbox's pid from ``--info-fd``, attaches ``slirp4netns``
to its network namespace (also as the install user), releases the sandbox
through ``--block-fd`` once the network is up, drops its own privileges and
waits.  Its exit status is the script's.  Everything lives in the
launcher's process group, so killing the group ends it all, and
``--die-with-parent``/``--exit-fd`` end the sandbox and the network helper
should the helper die.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

#: Where the script sees the server volume and itself.
SERVER_MOUNT = "/mnt/server"
INSTALL_MOUNT = "/mnt/install"
#: The user an install runs as when the server's user would be root.
NOBODY = 65534
#: slirp4netns's DNS forwarder inside the namespace.
SLIRP_DNS = "10.0.2.3"
#: The file (in the script directory) bound over ``/etc/resolv.conf`` with slirp4netns.
RESOLV_NAME = ".resolv.conf"

#: Host paths bound read-only when present (symlinks such as a merged
#: ``/bin -> usr/bin`` are recreated as symlinks).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Files and directories of ``/etc`` bound read-only when present.
ETC_PATHS = ("/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies",
             "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
             "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/host.conf",
             "/etc/gai.conf", "/etc/localtime", "/etc/timezone", "/etc/mime.types",
             "/etc/os-release")

NETWORKS = ("auto", "slirp4netns", "none", "host")

# Run by the launcher (``python -I -S -c HELPER <spec>``) with the daemon's
# privileges; see the module docstring.  Only the standard library, imported
# before any privilege drop.
HELPER = r"""
import json, os, sys
spec = json.loads(sys.argv[1])

def say(text):
    os.write(2, ("wings-twisted: " + text + "\n").encode())

def drop():
    if spec["uid"] >= 0 or spec["gid"] >= 0:
        os.setgroups([])
    if spec["gid"] >= 0:
        os.setgid(spec["gid"])
    if spec["uid"] >= 0:
        os.setuid(spec["uid"])

def spawn(argv, keep, privileged=False, quiet=False):
    pid = os.fork()
    if pid == 0:
        try:
            if quiet:
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 1)
                os.dup2(null, 2)
            if not privileged:
                drop()
            for fd in keep:
                os.set_inheritable(fd, True)
            os.execv(argv[0], argv)
        except BaseException as e:
            say("cannot start %s: %s" % (argv[0], e))
        os._exit(127)
    return pid

def read_json(fd):
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data or b"{}")

info_r, info_w = os.pipe()
block_r, block_w = os.pipe()
bwrap = [a.replace("{INFO}", str(info_w)).replace("{BLOCK}", str(block_r)) for a in spec["bwrap"]]
child = spawn(bwrap, [info_w, block_r])
os.close(info_w)
os.close(block_r)
exit_w = None
slirp = None
try:
    sandbox_pid = read_json(info_r).get("child-pid")
except ValueError:
    sandbox_pid = None
if spec["slirp"] and sandbox_pid:
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    # As root, slirp4netns stays root (/dev/net/tun is often 0600) and joins
    # only the network namespace; it confines itself (--enable-sandbox,
    # --enable-seccomp).  Otherwise it enters the sandbox's user namespace.
    root = os.geteuid() == 0
    argv = spec["slirp"] + ["--ready-fd=%d" % ready_w, "--exit-fd=%d" % exit_r]
    if not root:
        argv.append("--userns-path=/proc/%d/ns/user" % sandbox_pid)
    slirp = spawn(argv + [str(sandbox_pid), "tap0"], [ready_w, exit_r], privileged=root,
                  quiet=True)
    os.close(ready_w)
    os.close(exit_r)
    if not os.read(ready_r, 1):
        say("slirp4netns did not start: the install script has no network")
    os.close(ready_r)
try:
    os.write(block_w, b"1")
except OSError:
    pass
os.close(block_w)
os.close(info_r)
drop()
_, status = os.waitpid(child, 0)
if exit_w is not None:
    os.close(exit_w)
if slirp is not None:
    os.waitpid(slirp, 0)
code = os.waitstatus_to_exitcode(status)
os._exit(128 - code if code < 0 else code)
"""


def install_ids(uid: int, gid: int, is_root: bool) -> tuple[int, int]:
    """
    The uid/gid the script runs as: the server's (``-1`` keeps the daemon's
    when it is not root); root's (or unset ids while root) become
    ``nobody``.
    """
    if not is_root:
        return -1, -1
    return (uid if uid > 0 else NOBODY), (gid if gid > 0 else NOBODY)


def _bind_system(path: str, readlink: Callable[[str], str], exists: Callable[[str], bool],
                 islink: Callable[[str], bool]) -> list[str]:
    if islink(path):
        return ["--symlink", readlink(path), path]
    if exists(path):
        return ["--ro-bind", path, path]
    return []


def bwrap_argv(bwrap: str, volume: str, script_dir: str, command: Sequence[str], *,
               network: str, resolv: str | None = None,
               readlink: Callable[[str], str] = os.readlink,
               exists: Callable[[str], bool] = os.path.exists,
               islink: Callable[[str], bool] = os.path.islink) -> list[str]:
    """
    The bubblewrap command line of the jail (module docstring); ``{INFO}``
    and ``{BLOCK}`` are the descriptors ``HELPER`` fills in.

    :param network: ``isolated`` (own namespace: slirp4netns or nothing) or
        ``host``.
    :param resolv: a file to bind over ``/etc/resolv.conf`` (slirp's DNS).
    """
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-user", "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "installer",
            "--cap-drop", "ALL", "--info-fd", "{INFO}", "--block-fd", "{BLOCK}"]
    if network != "host":
        argv.append("--unshare-net")
    for path in SYSTEM_PATHS:
        argv += _bind_system(path, readlink, exists, islink)
    for path in ETC_PATHS:
        argv += ["--ro-bind-try", path, path]
    if resolv is not None:
        argv += ["--ro-bind", resolv, "/etc/resolv.conf"]
    else:
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             "--bind", volume, SERVER_MOUNT, "--ro-bind", script_dir, INSTALL_MOUNT,
             "--chdir", SERVER_MOUNT, "--"]
    return argv + list(command)


def slirp_argv(slirp4netns: str) -> list[str]:
    """
    The slirp4netns options (the helper appends the descriptors, the
    namespace and the interface): outbound NAT, host loopback unreachable,
    slirp confined by its own sandbox and seccomp filter.
    """
    return [slirp4netns, "--configure", "--mtu=65520", "--disable-host-loopback",
            "--enable-sandbox", "--enable-seccomp"]


def helper_argv(python: str, bwrap: Sequence[str], slirp: Sequence[str] | None,
                uid: int, gid: int) -> list[str]:
    """
    ``python -I -S -c HELPER <spec>``: the command the launcher runs.
    """
    spec = json.dumps({"bwrap": list(bwrap), "slirp": list(slirp) if slirp else None,
                       "uid": uid, "gid": gid})
    return [python, "-I", "-S", "-c", HELPER, spec]


def resolv_text() -> str:
    """
    ``/etc/resolv.conf`` inside a slirp4netns namespace.
    """
    return "nameserver {}\n".format(SLIRP_DNS)
