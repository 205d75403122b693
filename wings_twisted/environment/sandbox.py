"""
How the local-process environment runs an egg install script
(lifecycle.md §16.2, §21.4 "installer").

Egg scripts expect the server volume at ``/mnt/server`` and themselves at
``/mnt/install/install.sh``.  Without containers, a private mount namespace
gives them that view of the host:

* ``bwrap`` (bubblewrap), preferred: the host root read-only, fresh ``/dev``,
  ``/proc``, ``/tmp`` and ``/mnt``, the volume read-write at ``/mnt/server``,
  the script directory read-only at ``/mnt/install``, its own pid namespace,
  and it dies with its parent::

      bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /mnt
            --bind <volume> /mnt/server --ro-bind <script dir> /mnt/install
            --unshare-pid --die-with-parent --chdir /mnt/server
            <entrypoint> /mnt/install/install.sh

* ``unshare --mount`` (util-linux, root only): a private mount namespace in
  which a small ``sh`` script stages a tmpfs holding bind mounts of the
  volume and the (read-only) script directory, moves it onto ``/mnt``, puts
  a tmpfs on ``/tmp`` and runs the entrypoint in ``/mnt/server``.  The rest
  of the host stays writable: weaker than bwrap.
* none: only when ``environment.process.allow_unsandboxed_install`` is true,
  ``<entrypoint> <script dir>/install.sh`` with the volume as working
  directory (scripts that hard-code ``/mnt/server`` then write to the host
  path).

A helper is used only after a probe run shows it works here (bwrap may be
installed where unprivileged namespaces are forbidden).  None of this is a
security boundary: the script runs as the daemon user with the host's
network and, apart from the mounts above, the host's files.
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

log = Logger()

#: Where the script sees the server volume and itself.
SERVER_MOUNT = "/mnt/server"
INSTALL_MOUNT = "/mnt/install"
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
    ``path`` its executable (empty for ``none``).
    """

    kind: str
    path: str = ""


@dataclass(frozen=True)
class InstallCommand:
    """
    What to spawn: ``argv[0]`` is the executable, ``cwd`` the working
    directory of the spawned process.
    """

    argv: list[str]
    cwd: str


def bwrap_argv(bwrap: str, volume: str, script_dir: str, entrypoint: str) -> list[str]:
    """
    The bubblewrap command line (module docstring).
    """
    return [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--tmpfs", "/mnt",
            "--bind", volume, SERVER_MOUNT, "--ro-bind", script_dir, INSTALL_MOUNT,
            "--unshare-pid", "--die-with-parent", "--chdir", SERVER_MOUNT,
            entrypoint, INSTALL_MOUNT + "/" + SCRIPT_NAME]


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
                    entrypoint: str) -> InstallCommand:
    """
    The command that runs ``<script_dir>/install.sh`` with ``entrypoint``
    inside ``sandbox``.
    """
    if sandbox.kind == "bwrap":
        return InstallCommand(bwrap_argv(sandbox.path, volume, script_dir, entrypoint), script_dir)
    if sandbox.kind == "unshare":
        return InstallCommand(
            unshare_argv(sandbox.path, volume, script_dir, staging, entrypoint), script_dir)
    if sandbox.kind == "none":
        return InstallCommand([entrypoint, os.path.join(script_dir, SCRIPT_NAME)], volume)
    raise ValueError("unknown sandbox {!r}".format(sandbox.kind))


def candidates(which: Callable[[str], str | None], is_root: bool) -> list[Sandbox]:
    """
    The helpers installed here, best first (``unshare`` needs root).
    """
    found = []
    bwrap = which("bwrap")
    if bwrap:
        found.append(Sandbox("bwrap", bwrap))
    unshare = which("unshare")
    if unshare and is_root:
        found.append(Sandbox("unshare", unshare))
    return found


def probe_argv(sandbox: Sandbox) -> list[str]:
    """
    A command that exits 0 exactly when ``sandbox`` can build its mounts.
    """
    if sandbox.kind == "bwrap":
        return [sandbox.path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--tmpfs", "/mnt", "--unshare-pid", "--die-with-parent",
                "/bin/sh", "-c", "exit 0"]
    if sandbox.kind == "unshare":
        return [sandbox.path, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                "mount -t tmpfs tmpfs /mnt && mount -t tmpfs tmpfs /tmp"]
    return ["/bin/sh", "-c", "exit 0"]


async def find_sandbox(reactor: IReactorProcess, which: Callable[[str], str | None], is_root: bool,
                       env: dict[str, str]) -> Sandbox | None:
    """
    The first candidate whose probe succeeds, or ``None``.
    """
    for sandbox in candidates(which, is_root):
        argv = probe_argv(sandbox)
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


def write_script(tmp_directory: str, uuid: str, script: str, staging: bool) -> tuple[str, str]:
    """
    Write ``<tmp_directory>/<uuid>/install.sh`` (directory 0700, file 0644,
    LF line ends), replacing anything left there; with ``staging`` also make
    the empty ``<uuid>.mnt`` directory ``unshare`` needs.  Returns both
    paths.  Blocking.
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
    probe_env = {"PATH": job.daemon_path}
    sandbox = await find_sandbox(reactor, which, is_root, probe_env)
    if sandbox is None:
        if not job.allow_unsandboxed:
            return InstallResult(False, error=(
                "no sandbox helper (bwrap, or unshare as root) works on this host and "
                "environment.process.allow_unsandboxed_install is false, so the install "
                "script was not run"))
        sandbox = Sandbox("none")
        log.warn("Install of {uuid} runs without a sandbox (allow_unsandboxed_install)",
                 uuid=job.uuid)
    try:
        script_dir, stage = await run_blocking(write_script, job.tmp_directory, job.uuid,
                                               job.script, sandbox.kind == "unshare")
    except OSError as e:
        return InstallResult(False, error="could not write the install script: {}".format(e))
    try:
        command = install_command(sandbox, job.volume, script_dir, stage, entrypoint)
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
