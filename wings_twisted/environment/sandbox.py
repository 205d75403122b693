"""
How the local-process environment runs an egg install script
(lifecycle.md §16.2, §21.4 "installer").

Egg scripts expect the server volume at ``/mnt/server`` and themselves at
``/mnt/install/install.sh``.  Without containers, these helpers give them
that view:

* ``bwrap`` (bubblewrap), the only one used by default: the jail of
  ``jail.py``, a boundary (the server's user, no capabilities, its own
  namespaces, only the system directories an installer needs, no access to
  the daemon's configuration, token or data, and a network that cannot
  reach the host's loopback).  A bwrap that cannot build that jail here (no
  user namespaces) is not used.
* ``unshare --mount`` (util-linux, root only): a private mount namespace in
  which a small ``sh`` script stages a tmpfs holding bind mounts of the
  volume and the (read-only) script directory, moves it onto ``/mnt``, puts
  a tmpfs on ``/tmp`` and runs the entrypoint in ``/mnt/server``.  The rest
  of the host stays readable *and writable*, as root, with the host's
  network: **not a boundary**.  Used only when the operator set
  ``environment.process.allow_unsandboxed_install`` (the documented unsafe
  switch), when bwrap is missing or unusable.
* none: also only with ``allow_unsandboxed_install``: ``<entrypoint>
  <script dir>/install.sh`` as the daemon user, with the volume as working
  directory (scripts that hard-code ``/mnt/server`` then write to the host
  path).

Without the switch and without a working bwrap, the script is not run, a
line says why, and the install is reported unsuccessful.  A helper is used
only after a probe run (the jail itself, running ``exit 0``) shows it works.
The network of the jail is ``environment.process.install_network``
(``jail.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from typing import Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessValue
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..blocking import RunBlocking
from ..reactor import IReactor
from .lines import LineSplitter
from . import InstallResult
from .launcher import launcher_argv
from .jail import (INSTALL_MOUNT, RESOLV_NAME, bwrap_argv as jail_argv,
                   helper_argv, install_ids, resolv_text, slirp_argv)

log = Logger()

SCRIPT_NAME = "install.sh"

# Runs inside ``unshare --mount``; $1 volume, $2 script dir, $3 staging
# directory, the rest the command.  Everything is bound into the staging
# tmpfs *before* /mnt and /tmp are covered, so a volume or script directory
# that lives under /mnt or /tmp is still reachable.
_UNSHARE_SCRIPT = (
    'set -e; v=$1; s=$2; t=$3; shift 3; '
    'mount --make-rprivate /; '
    'mount -t tmpfs -o mode=0755 tmpfs "$t"; '
    'mkdir "$t/server" "$t/install"; '
    'mount --bind "$v" "$t/server"; '
    'mount --bind "$s" "$t/install"; '
    'mount -o remount,bind,ro "$t/install"; '
    'mount --move "$t" /mnt; '
    'mount -t tmpfs -o mode=1777 tmpfs /tmp; '
    'cd /mnt/server; '
    'exec "$@"'
)


@dataclass(frozen=True)
class Sandbox:
    """
    A usable helper: ``kind`` is ``bwrap``, ``unshare`` or ``none``;
    ``path`` its executable (empty for ``none``).  For ``bwrap``: the
    jail's network (``isolated`` or ``host``), the ``slirp4netns`` that
    gives an isolated jail outbound access (empty: no network), and the
    uid/gid the script runs as (-1: the daemon's).
    """

    kind: str
    path: str = ""
    network: str = "isolated"
    slirp: str = ""
    uid: int = -1
    gid: int = -1


@dataclass(frozen=True)
class InstallCommand:
    """
    What to spawn: ``argv[0]`` is the executable, ``cwd`` the working
    directory of the spawned process.
    """

    argv: list[str]
    cwd: str


def bwrap_argv(sandbox: Sandbox, volume: str, script_dir: str, command: list[str],
               python: str) -> list[str]:
    """
    The jail's helper command line (``jail.py``) running ``command``.
    """
    resolv = os.path.join(script_dir, RESOLV_NAME) if sandbox.slirp else None
    jail = jail_argv(sandbox.path, volume, script_dir, command, network=sandbox.network,
                     resolv=resolv)
    slirp = slirp_argv(sandbox.slirp) if sandbox.slirp else None
    return helper_argv(python, jail, slirp, sandbox.uid, sandbox.gid)


def unshare_argv(unshare: str, volume: str, script_dir: str, staging: str,
                 entrypoint: str) -> list[str]:
    """
    The ``unshare --mount`` command line; ``staging`` is an empty directory
    the namespace uses while it builds ``/mnt``.
    """
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            _UNSHARE_SCRIPT, "sh", volume, script_dir, staging,
            entrypoint, INSTALL_MOUNT + "/" + SCRIPT_NAME]


def install_command(sandbox: Sandbox, volume: str, script_dir: str, staging: str,
                    entrypoint: str, python: str = "python3") -> InstallCommand:
    """
    The command that runs ``<script_dir>/install.sh`` with ``entrypoint``
    inside ``sandbox`` (``python`` runs the jail's helper).
    """
    if sandbox.kind == "bwrap":
        command = [entrypoint, INSTALL_MOUNT + "/" + SCRIPT_NAME]
        return InstallCommand(bwrap_argv(sandbox, volume, script_dir, command, python), "/")
    if sandbox.kind == "unshare":
        return InstallCommand(
            unshare_argv(sandbox.path, volume, script_dir, staging, entrypoint), script_dir)
    if sandbox.kind == "none":
        return InstallCommand([entrypoint, os.path.join(script_dir, SCRIPT_NAME)], volume)
    raise ValueError("unknown sandbox {!r}".format(sandbox.kind))


def candidates(which: Callable[[str], str | None], is_root: bool,
               allow_unsafe: bool = False, *, network: str = "auto", uid: int = -1,
               gid: int = -1) -> list[Sandbox]:
    """
    The helpers installed here, best first: the bwrap jail (with
    ``slirp4netns`` when ``network`` allows and it is installed), then, only
    with ``allow_unsafe`` and as root, ``unshare``.
    """
    found = []
    bwrap = which("bwrap")
    if bwrap:
        slirp = which("slirp4netns") if network in ("auto", "slirp4netns") else None
        found.append(Sandbox("bwrap", bwrap, "host" if network == "host" else "isolated",
                             slirp or "", *install_ids(uid, gid, is_root)))
    unshare = which("unshare")
    if unshare and is_root and allow_unsafe:
        found.append(Sandbox("unshare", unshare))
    return found


def probe_argv(sandbox: Sandbox, script_dir: str = "/", python: str = "python3") -> list[str]:
    """
    A command that exits 0 exactly when ``sandbox`` can build its mounts
    (for bwrap: the jail itself, without network, on ``script_dir``).
    """
    if sandbox.kind == "bwrap":
        bare = Sandbox("bwrap", sandbox.path, "isolated", "", sandbox.uid, sandbox.gid)
        return launcher_argv(python) + bwrap_argv(bare, script_dir, script_dir,
                                                  ["/bin/sh", "-c", "exit 0"], python)
    if sandbox.kind == "unshare":
        return [sandbox.path, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                "mount -t tmpfs tmpfs /mnt && mount -t tmpfs tmpfs /tmp"]
    return ["/bin/sh", "-c", "exit 0"]


async def find_sandbox(reactor: IReactorProcess, which: Callable[[str], str | None], is_root: bool,
                       env: dict[str, str], *, allow_unsafe: bool = False,
                       network: str = "auto", uid: int = -1, gid: int = -1,
                       script_dir: str = "/", python: str = "python3") -> Sandbox | None:
    """
    The first candidate whose probe succeeds, or ``None``.
    """
    for sandbox in candidates(which, is_root, allow_unsafe, network=network, uid=uid, gid=gid):
        argv = probe_argv(sandbox, script_dir, python)
        try:
            code = await getProcessValue(argv[0], argv[1:], env=env, path="/", reactor=reactor)
        except OSError:
            continue
        if code == 0:
            return sandbox
    return None


def script_text(script: str) -> str:
    """
    The script as written to disk: CRLF line ends become LF (as upstream;
    a lone CR is left alone).
    """
    return script.replace("\r\n", "\n")


def sandbox_env(env: Sequence[tuple[str, str]], sandbox: Sandbox, volume: str,
                daemon_path: str) -> dict[str, str]:
    """
    The installer's environment: the server's variables, ``PATH`` from the
    daemon when the egg gives none, and a writable ``HOME`` (``/tmp`` inside
    a sandbox, whose root is read-only; the volume otherwise).
    """
    out = dict(env)
    out.setdefault("PATH", daemon_path)
    out.setdefault("HOME", volume if sandbox.kind == "none" else "/tmp")
    return out


def write_script(tmp_directory: str, uuid: str, script: str, staging: bool,
                 owner: tuple[int, int] | None = None) -> tuple[str, str]:
    """
    Write ``<tmp_directory>/<uuid>/install.sh`` (directory 0700, file 0644,
    LF line ends) and the jail's ``resolv.conf``, replacing anything left
    there; with ``staging`` also make the empty ``<uuid>.mnt`` directory
    ``unshare`` needs.  ``owner`` is given the directory (the unprivileged
    jail must be able to bind it).  Returns both paths.  Blocking.
    """
    script_dir = os.path.join(tmp_directory, uuid)
    stage = script_dir + ".mnt"
    remove_script(script_dir, stage)
    os.makedirs(tmp_directory, exist_ok=True)
    os.mkdir(script_dir, 0o700)
    os.chmod(script_dir, 0o700)
    path = os.path.join(script_dir, SCRIPT_NAME)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(script_text(script))
    os.chmod(path, 0o644)
    with open(os.path.join(script_dir, RESOLV_NAME), "w", encoding="ascii") as f:
        f.write(resolv_text())
    if owner is not None:
        os.chown(script_dir, *owner)
    if staging:
        os.mkdir(stage, 0o700)
    return script_dir, stage


def remove_script(script_dir: str, stage: str) -> None:
    """
    Delete what ``write_script`` made.  Blocking.
    """
    shutil.rmtree(script_dir, ignore_errors=True)
    try:
        os.rmdir(stage)
    except OSError:
        pass


def exit_code(reason: Failure) -> int:
    """
    The exit status in a ``processEnded``/``processExited`` reason; killed
    by signal N is 128+N (Docker's convention: 137 for SIGKILL).
    """
    sig = getattr(reason.value, "signal", None)
    if sig:
        return 128 + int(sig)
    return int(getattr(reason.value, "exitCode", 0) or 0)


class _InstallProtocol(ProcessProtocol):
    """
    Collects the installer's (merged) output into lines; ``done`` fires
    with the exit code and, when cancelled, kills the process group.
    """

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._splitter = LineSplitter(self._line)
        self._on_line = on_line
        self.done: Deferred[int] = Deferred(self._cancel)
        self.gone: Deferred[None] = Deferred()

    def _line(self, line: str) -> None:
        try:
            self._on_line(line)
        except Exception:
            log.failure("install output callback failed")

    def _cancel(self, _: Deferred[int]) -> None:
        pid = getattr(self.transport, "pid", None)
        if pid is not None:
            kill_group(pid, signal.SIGKILL)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._splitter.feed(data)

    def processEnded(self, reason: Failure) -> None:
        self._splitter.flush()
        if not self.done.called:
            self.done.callback(exit_code(reason))
        self.gone.callback(None)


def kill_group(pid: int, sig: int) -> None:
    """
    Send ``sig`` to the process group led by ``pid`` (the launcher makes
    every child a group leader), or to ``pid`` alone before it got there.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def resolve_entrypoint(entrypoint: str, path: str) -> str | None:
    """
    The executable for an egg's ``entrypoint`` (``bash``, ``ash``, ...):
    looked up on ``path``; ``ash`` (Alpine installer images) falls back to
    ``/bin/sh``; ``None`` when there is nothing to run.
    """
    name = entrypoint.strip() or "sh"
    found = shutil.which(name, path=path)
    if found is None and os.path.basename(name) in ("ash", "sh", "dash"):
        found = shutil.which("sh", path=path) or ("/bin/sh" if os.path.exists("/bin/sh") else None)
    return found


def _say(on_line: Callable[[str], None], text: str) -> None:
    try:
        on_line("wings-twisted: " + text)
    except Exception:
        log.failure("install output callback failed")


@dataclass(frozen=True)
class InstallJob:
    """
    Everything ``run_install`` needs besides the reactor.
    """

    uuid: str
    volume: str
    tmp_directory: str
    script: str
    image: str
    entrypoint: str
    env: tuple[tuple[str, str], ...]
    allow_unsandboxed: bool
    daemon_path: str
    python: str
    uid: int = -1
    gid: int = -1
    network: str = "auto"


async def run_install(reactor: IReactor, run_blocking: RunBlocking, job: InstallJob,
                      on_line: Callable[[str], None], *,
                      which: Callable[[str], str | None], is_root: bool) -> InstallResult:
    """
    Run ``job``'s script in the best available sandbox (module docstring),
    each output line to ``on_line``.  Cancelling kills the installer's
    process group and still cleans up.
    """
    log.info("Install of {uuid}: the image {image!r} is not used by the process environment; "
             "the script runs on this host", uuid=job.uuid, image=job.image)
    if not await run_blocking(os.path.isdir, job.volume):
        return InstallResult(False, error="server volume {} does not exist".format(job.volume))
    entrypoint = resolve_entrypoint(job.entrypoint, dict(job.env).get("PATH", job.daemon_path))
    if entrypoint is None:
        return InstallResult(False, error="install entrypoint {!r} is not installed on this "
                                          "host".format(job.entrypoint))
    if job.network == "slirp4netns" and which("slirp4netns") is None:
        return InstallResult(False, error=(
            "environment.process.install_network is slirp4netns but slirp4netns is not "
            "installed, so the install script was not run"))
    uid, gid = install_ids(job.uid, job.gid, is_root)
    # Written first: the jail's probe binds the script directory.
    try:
        script_dir, stage = await run_blocking(
            write_script, job.tmp_directory, job.uuid, job.script,
            is_root and job.allow_unsandboxed, (uid, gid) if is_root else None)
    except OSError as e:
        return InstallResult(False, error="could not write the install script: {}".format(e))
    probe_env = {"PATH": job.daemon_path}
    try:
        sandbox = await find_sandbox(reactor, which, is_root, probe_env,
                                     allow_unsafe=job.allow_unsandboxed, network=job.network,
                                     uid=job.uid, gid=job.gid, script_dir=script_dir,
                                     python=job.python)
    except BaseException:
        await run_blocking(remove_script, script_dir, stage)
        raise
    if sandbox is None:
        if not job.allow_unsandboxed:
            await run_blocking(remove_script, script_dir, stage)
            return InstallResult(False, error=(
                "bubblewrap (bwrap) is missing or cannot build its sandbox on this host "
                "(user namespaces), and environment.process.allow_unsandboxed_install is "
                "false, so the install script was not run"))
        sandbox = Sandbox("none")
        log.warn("Install of {uuid} runs without a sandbox (allow_unsandboxed_install)",
                 uuid=job.uuid)
    elif sandbox.kind == "unshare":
        log.warn("Install of {uuid} runs under unshare, which is not a boundary "
                 "(allow_unsandboxed_install)", uuid=job.uuid)
    elif sandbox.network == "isolated" and not sandbox.slirp:
        _say(on_line, "slirp4netns is not in use: the install script runs without network "
                      "access (environment.process.install_network)")
    try:
        command = install_command(sandbox, job.volume, script_dir, stage, entrypoint,
                                  job.python)
        argv = launcher_argv(job.python, merge=True) + command.argv
        env = sandbox_env(job.env, sandbox, job.volume, job.daemon_path)
        proto = _InstallProtocol(on_line)
        try:
            reactor.spawnProcess(proto, argv[0], argv, env=env, path=command.cwd,
                                 childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            return InstallResult(False, error="could not start the installer: {}".format(e))
        log.info("Install of {uuid} running with {kind}", uuid=job.uuid, kind=sandbox.kind)
        try:
            code = await proto.done
        except CancelledError:
            # Killed by the canceller: let it really go before the directory
            # it runs from is deleted.
            await proto.gone.addTimeout(5, reactor).addErrback(lambda _: None)
            raise
        return InstallResult(True, exit_code=code)
    finally:
        await run_blocking(remove_script, script_dir, stage)
