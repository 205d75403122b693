"""
Shared machinery of the benchmarks in ``bench/``: the test file, the
processes under test (development panel + ``twistd -n wings``, nginx, the
receive-and-discard sink server), OS accounting of their CPU and memory,
``curl`` as the one client, and the ``bench/RESULTS.md`` sections.

Everything runs on loopback.  Processes are started in their own session and
stopped by their process-group id when a ``Processes`` block ends, errors
included; scratch directories live under ``bench/out/`` (gitignored) and are
removed the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Callable, Iterator, Sequence

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
OUT = os.path.join(BENCH, "out")
RESULTS = os.path.join(BENCH, "RESULTS.md")
NGINX_TEMPLATE = os.path.join(BENCH, "nginx.conf")
DATA_FILE = os.path.join(OUT, "data", "random-1GiB.bin")
PYTHON = sys.executable
if REPO not in sys.path:
    # The checkout's wings_twisted (tokens are minted with it), ahead of any installed copy.
    sys.path.insert(0, REPO)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CURL = shutil.which("curl") or "/usr/bin/curl"

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
TOKEN_ID = "benchTokenId0001"
TOKEN = "bench-node-token-0123456789abcdef0123456789abcdef0123456789abcd"
SAMPLE_PERIOD = 0.02
START_TIMEOUT = 30.0


# -- small utilities ---------------------------------------------------------

def log(message: str) -> None:
    """
    One progress line on stderr (stdout stays free for the caller).
    """
    sys.stderr.write("[bench {}] {}\n".format(time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


def wait_for(check: Callable[[], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
    """
    Poll ``check`` until it returns something true; ``RuntimeError`` after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.05)


def median(values: Sequence[float]) -> float:
    """
    The median (``nan`` for no values).
    """
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """
    ``a / b``, ``nan`` when ``b`` is zero.
    """
    return a / b if b else float("nan")


def alternate(runs: int, targets: Sequence[str]) -> Iterator[tuple[int, str]]:
    """
    ``(run, target)`` pairs, the target order reversed on every other run so
    that each target sees the same share of the machine's noise.
    """
    for run in range(runs):
        order = list(targets) if run % 2 == 0 else list(reversed(targets))
        for target in order:
            yield run, target


# -- the test file -----------------------------------------------------------

@contextlib.contextmanager
def data_file(size: int = GIB, *, keep: bool = False) -> Iterator[str]:
    """
    The shared file of random bytes: created unless a previous run kept it,
    read once so the page cache is warm, removed afterwards unless ``keep``.
    """
    path = DATA_FILE
    try:
        if not (os.path.exists(path) and os.path.getsize(path) == size):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            log("creating {} ({} MiB of random bytes)".format(os.path.relpath(path, REPO), size // MIB))
            with open(path + ".tmp", "wb") as f:
                chunk = 8 * MIB
                for _ in range(size // chunk):
                    f.write(os.urandom(chunk))
                f.write(os.urandom(size % chunk))
            os.replace(path + ".tmp", path)
        warm(path)
        yield path
    finally:
        leftovers = [path + ".tmp"] + ([] if keep else [path])
        for name in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))


def warm(path: str) -> None:
    """
    Read ``path`` once so both servers serve it from the page cache.
    """
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MIB)
        while f.readinto(buf):
            pass


@contextlib.contextmanager
def scratch(name: str) -> Iterator[str]:
    """
    A fresh directory ``bench/out/<name>-<pid>``, removed afterwards.
    """
    path = os.path.join(OUT, "{}-{}".format(name, os.getpid()))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- processes ---------------------------------------------------------------

class Processes:
    """
    The subprocesses a benchmark started; all stopped (by process group id)
    when the ``with`` block ends.
    """

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def spawn(self, argv: Sequence[str], log_path: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """
        Start ``argv`` in its own session, output to ``log_path``.
        """
        with open(log_path, "ab") as out:
            process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """
        SIGTERM the process group, SIGKILL it after 10 s.
        """
        if process in self._started:
            self._started.remove(process)
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def stop_all(self) -> None:
        """
        Stop everything still running, last started first.
        """
        for process in reversed(list(self._started)):
            self.stop(process)


def _log_match(path: str, pattern: re.Pattern[str], process: subprocess.Popen[bytes]) -> re.Match[str] | None:
    if process.poll() is not None:
        with open(path, errors="replace") as f:
            raise RuntimeError("{} exited ({}):\n{}".format(os.path.basename(path), process.returncode,
                                                             f.read()[-3000:]))
    try:
        with open(path, errors="replace") as f:
            return pattern.search(f.read())
    except FileNotFoundError:
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """
    A small GET (status, body); HTTP errors are returned, not raised.
    """
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


# -- the daemon --------------------------------------------------------------

class Daemon:
    """
    The development panel and ``twistd -n wings`` (process driver) with one
    server whose volume is ``<scratch>/data/<SERVER>`` (and ``more_servers``,
    uuid → development-panel fixture); ``listen`` overrides the listener's
    strports description (``wings --listen``); ``entry`` is ``twistd``
    (``twistd -n wings``) or ``wings`` (the ``wings`` command).
    """

    LISTENING = re.compile(r"ApiSite starting on (\d+)")
    PANEL = re.compile(r"listening at http://127\.0\.0\.1:(\d+)")

    def __init__(self, processes: Processes, base: str, *, upload_limit: int = 4096,
                 listen: str | None = None, server: dict[str, Any] | None = None,
                 config_overrides: dict[str, Any] | None = None,
                 users: dict[str, Any] | None = None,
                 panel_overrides: dict[str, Any] | None = None,
                 more_servers: dict[str, dict[str, Any]] | None = None,
                 entry: str = "twistd") -> None:
        import yaml

        self.base = base
        self.volume = os.path.join(base, "data", SERVER)
        self.uuids = [SERVER] + list(more_servers or ())
        panel_config = os.path.join(base, "devpanel.yml")
        with open(panel_config, "w") as f:
            yaml.safe_dump({
                "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080",
                         "url": "http://127.0.0.1:8081"},
                "servers": dict({SERVER: dict({"disk_space": 0, "name": "bench"}, **(server or {}))},
                                **(more_servers or {})),
                "users": users or {},
                **(panel_overrides or {}),
            }, f)
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        panel_log = os.path.join(base, "devpanel.log")
        panel = processes.spawn([PYTHON, "-m", "wings_twisted.devpanel", "serve", "--config", panel_config,
                                 "--listen", "tcp:0:interface=127.0.0.1"], panel_log, env=env, cwd=REPO)
        panel_port = int(wait_for(lambda: _log_match(panel_log, self.PANEL, panel), "the panel").group(1))
        self.panel_url = "http://127.0.0.1:{}".format(panel_port)
        config: dict[str, Any] = {
            "token_id": TOKEN_ID, "token": TOKEN, "remote": "http://127.0.0.1:{}".format(panel_port),
            "api": {"host": "127.0.0.1", "port": 0, "upload_limit": upload_limit},
            "system": {name: os.path.join(base, directory) for name, directory in (
                ("root_directory", "root"), ("log_directory", "log"), ("data", "data"),
                ("archive_directory", "archives"), ("backup_directory", "backups"),
                ("tmp_directory", "tmp"))},
            "environment": {"driver": "process"},
        }
        config["system"]["user"] = {"uid": os.getuid(), "gid": os.getgid()}
        # Any free port: several daemons (and other benchmarks) may run at once.
        config["system"]["sftp"] = {"bind_address": "127.0.0.1", "bind_port": 0}
        # Never write /etc/logrotate.d/wings from a benchmark.
        config["system"]["enable_log_rotate"] = False
        # An existing account: as root the daemon would otherwise create "pterodactyl",
        # which cannot run an interpreter under a private home such as /root.
        import pwd
        config["system"]["username"] = pwd.getpwuid(os.getuid()).pw_name
        config.update(config_overrides or {})
        self.config_path = os.path.join(base, "config.yml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        if entry == "wings":
            # What the systemd unit runs (no twistd plugin scan, pdb, pid file).
            self.command = [PYTHON, "-m", "wings_twisted.cli", "--config", self.config_path]
        else:
            twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
            self.command = [twistd, "--pidfile=", "-n", "--logfile=-", "wings", "--config", self.config_path]
        if listen:
            self.command += ["--listen", listen]
        self.log_path = os.path.join(base, "daemon.log")
        self.process = processes.spawn(self.command, self.log_path, env=env, cwd=base)
        port = int(wait_for(lambda: _log_match(self.log_path, self.LISTENING, self.process),
                            "the daemon to listen").group(1))
        self.url = "http://127.0.0.1:{}".format(port)
        wait_for(self._booted, "the daemon to load its server")
        self.pid = self.process.pid
        self.ps = psutil.Process(self.pid)

    def _booted(self) -> bool:
        status, body = http_get(self.url + "/api/servers", {"Authorization": "Bearer " + TOKEN})
        return status == 200 and all(uuid.encode() in body for uuid in self.uuids) \
            and os.path.isdir(self.volume)

    def add_file(self, source: str, name: str) -> str:
        """
        Hard-link ``source`` into the volume as ``/name`` (no copy, same pages).
        """
        target = os.path.join(self.volume, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        os.link(source, target)
        return target

    def download_url(self, path: str) -> str:
        """
        A freshly signed ``/download/file`` URL (tokens are single use).
        """
        from wings_twisted.devpanel.tokens import mint_download_file
        return self.url + "/download/file?token=" + mint_download_file(TOKEN, SERVER, path)

    def upload_url(self, directory: str) -> str:
        """
        A freshly signed ``/upload/file`` URL into ``directory``.
        """
        from urllib.parse import quote

        from wings_twisted.devpanel.tokens import mint_upload
        return "{}/upload/file?token={}&directory={}".format(
            self.url, mint_upload(TOKEN, SERVER), quote(directory, safe=""))

    def processes(self) -> list[psutil.Process]:
        """
        What the CPU of the daemon is counted on.
        """
        return [self.ps]


# -- nginx -------------------------------------------------------------------

class Nginx:
    """
    nginx (one worker, ``daemon off``) serving ``root`` with ``sendfile`` on a
    free loopback port, ``POST /upload`` storing the body under
    ``<base>/nginx/body`` (see ``bench/nginx.conf``).
    """

    def __init__(self, processes: Processes, base: str, root: str) -> None:
        prefix = os.path.join(base, "nginx")
        self.body_dir = os.path.join(prefix, "body")
        os.makedirs(self.body_dir)
        self.port = free_port()
        with open(NGINX_TEMPLATE) as f:
            text = f.read()
        values = {"PORT": str(self.port), "ROOT": root, "PREFIX": prefix,
                  "USER": "user root root;" if os.geteuid() == 0 else ""}
        for key, value in values.items():
            text = text.replace("@{}@".format(key), value)
        self.config_path = os.path.join(prefix, "nginx.conf")
        with open(self.config_path, "w") as f:
            f.write(text)
        self.log_path = os.path.join(prefix, "nginx.log")
        self.process = processes.spawn([NGINX, "-p", prefix, "-c", self.config_path, "-e", "stderr"],
                                       self.log_path)
        self.url = "http://127.0.0.1:{}".format(self.port)
        wait_for(self._ready, "nginx to answer")
        self.master = psutil.Process(self.process.pid)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                raise RuntimeError("nginx exited:\n" + f.read())
        return http_get(self.url + "/ok")[0] == 200

    def processes(self) -> list[psutil.Process]:
        """
        Master and workers.
        """
        return [self.master] + self.master.children()

    def workers(self) -> list[psutil.Process]:
        """
        The worker processes.
        """
        return self.master.children()

    def meter(self) -> "Meter":
        """
        A ``Meter`` over master and worker that also samples the worker's
        RSS, so that both sides of a comparison pay for the same sampling.
        """
        return Meter(self.processes(), self.workers()[0])

    def stored_bodies(self) -> list[str]:
        """
        Request bodies nginx wrote to its temp directory.
        """
        found: list[str] = []
        for directory, _, files in os.walk(self.body_dir):
            found.extend(os.path.join(directory, name) for name in files)
        return found


def free_port() -> int:
    """
    A loopback port that was free a moment ago.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the receive-and-discard ceiling -----------------------------------------

class SinkServer:
    """
    ``bench/sink_server.py``: the daemon's real site with a body sink that
    drops ``POST /upload/file`` bodies.
    """

    LISTENING = re.compile(r"listening on (\d+)")

    def __init__(self, processes: Processes, base: str, *, profile: str | None = None) -> None:
        self.log_path = os.path.join(base, "sink.log")
        argv = [PYTHON, os.path.join(BENCH, "sink_server.py"), "--base", os.path.join(base, "sink")]
        if profile:
            argv += ["--profile", profile]
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        self.process = processes.spawn(argv, self.log_path, env=env, cwd=REPO)
        port = int(wait_for(lambda: _log_match(self.log_path, self.LISTENING, self.process),
                            "the sink server").group(1))
        self.url = "http://127.0.0.1:{}".format(port)
        self.ps = psutil.Process(self.process.pid)

    def processes(self) -> list[psutil.Process]:
        """
        Just the one process.
        """
        return [self.ps]


# -- accounting --------------------------------------------------------------

def _cpu(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _sched_ns(processes: Sequence[psutil.Process]) -> int:
    # Nanosecond on-CPU time of every live thread (/proc/<pid>/task/*/schedstat):
    # psutil's user+system comes in 10 ms ticks, too coarse for a 256 MiB sendfile.
    total = 0
    for process in processes:
        base = "/proc/{}/task".format(process.pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(base):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open("{}/{}/schedstat".format(base, tid)) as f:
                        total += int(f.read().split()[0])
    return total


def _minflt(processes: Sequence[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/{}/stat".format(process.pid)) as f:
                total += int(f.read().rpartition(")")[2].split()[7])
    return total


def _hwm(pid: int) -> int:
    try:
        with open("/proc/{}/status".format(pid)) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def _reset_hwm(pid: int) -> None:
    # "5" resets the peak RSS (VmHWM) of the process (Linux >= 4.0).
    with contextlib.suppress(OSError):
        with open("/proc/{}/clear_refs".format(pid), "w") as f:
            f.write("5")


def listen_overflows() -> int:
    """
    The kernel's count of connections dropped because a listen queue was
    full (``TcpExt: ListenOverflows``, all sockets).
    """
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:]))
            return int(counters.get("ListenOverflows", 0))
    return 0


class Meter:
    """
    Over a ``with`` block: CPU seconds of ``processes`` (all threads) as
    psutil ``user + system`` (``cpu``) and as scheduler run time
    (``sched``, ns resolution), their minor page faults, and the peak RSS of
    ``rss_of`` (sampled every 20 ms, and its VmHWM reset at the start).
    """

    def __init__(self, processes: Sequence[psutil.Process], rss_of: psutil.Process | None = None) -> None:
        self._processes = list(processes)
        self._rss_of = rss_of
        self.cpu = 0.0
        self.sched = 0.0
        self.minflt = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Meter":
        if self._rss_of is not None:
            _reset_hwm(self._rss_of.pid)
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._start = (_cpu(self._processes), _sched_ns(self._processes), _minflt(self._processes))
        return self

    def __exit__(self, *exc: Any) -> None:
        cpu, sched, minflt = _cpu(self._processes), _sched_ns(self._processes), _minflt(self._processes)
        self.cpu = cpu - self._start[0]
        self.sched = (sched - self._start[1]) / 1e9
        self.minflt = minflt - self._start[2]
        if self._thread is not None and self._rss_of is not None:
            self._stop.set()
            self._thread.join()
            self.peak_rss = max(self.peak_rss, _hwm(self._rss_of.pid))

    def _sample(self) -> None:
        assert self._rss_of is not None
        while not self._stop.wait(SAMPLE_PERIOD):
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self._rss_of.memory_info().rss)


class Background:
    """
    The CPU that processes outside this benchmark used during a ``with``
    block (other people's test runs on a shared machine): the noise the
    alternation of targets has to absorb, reported next to the figures.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu = 0.0
        self.top: list[tuple[str, float]] = []

    def __enter__(self) -> "Background":
        self._start = time.monotonic()
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self._start
        used: dict[str, float] = {}
        for key, (command, cpu) in self._snapshot().items():
            delta = cpu - self._before.get(key, ("", 0.0))[1]
            if delta > 0:
                used[command] = used.get(command, 0.0) + delta
        self.cpu = sum(used.values())
        self.top = sorted(used.items(), key=lambda item: -item[1])[:3]

    @staticmethod
    def _snapshot() -> dict[tuple[int, float], tuple[str, float]]:
        me = psutil.Process()
        ours = {me.pid} | {child.pid for child in me.children(recursive=True)}
        found = {}
        for process in psutil.process_iter(["pid", "cmdline", "cpu_times", "create_time"]):
            info = process.info
            if info["pid"] in ours or not info["cmdline"] or info["cpu_times"] is None:
                continue  # ours, or a kernel thread
            # Paths inside the checkout are written relative to it (RESULTS.md names no machine).
            command = " ".join(os.path.basename(part) if i == 0 else part.replace(REPO + os.sep, "")
                               for i, part in enumerate(info["cmdline"][:4]))
            found[(info["pid"], info["create_time"])] = (
                command[:80], info["cpu_times"].user + info["cpu_times"].system)
        return found

    def lines(self) -> list[str]:
        """
        One Markdown line describing the background load.
        """
        cores = os.cpu_count() or 1
        share = self.cpu / (self.seconds * cores) if self.seconds else 0.0
        top = ", ".join("`{}` {:.0f} s".format(command, cpu) for command, cpu in self.top if cpu >= 0.5)
        return ["- Background load: other processes used {:.0f} CPU-s during the {:.0f} s of measurement"
                " ({:.0%} of the {} cores){}".format(self.cpu, self.seconds, share, cores,
                                                    "; mostly " + top if top else "")]


# -- the client --------------------------------------------------------------

def curl(args: Sequence[str], timeout: float = 300) -> tuple[str, float]:
    """
    Run ``curl -s -S <args>``: its stdout (the ``-w`` output) and the CPU
    seconds curl used.  A failing curl raises with its stderr.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([CURL, "-s", "-S", *args], capture_output=True, timeout=timeout, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError("curl {} failed ({}): {}".format(" ".join(args)[:200], result.returncode,
                                                             result.stderr.strip()))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result.stdout, cpu


# -- profiling ---------------------------------------------------------------

class Profiler:
    """
    ``py-spy record`` attached to ``pid`` for a ``with`` block, when py-spy is
    installed; ``summary()`` lists the hottest functions by own samples.
    """

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        os.makedirs(os.path.join(OUT, "profiles"), exist_ok=True)
        self.raw = os.path.join(OUT, "profiles", name + ".txt")
        self.svg = os.path.join(OUT, "profiles", name + ".svg")
        self.binary = shutil.which("py-spy") or os.path.join(os.path.dirname(PYTHON), "py-spy")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def available(self) -> bool:
        """
        Whether py-spy can be run.
        """
        return os.path.exists(self.binary)

    def __enter__(self) -> "Profiler":
        if self.available:
            self._process = subprocess.Popen(
                [self.binary, "record", "--pid", str(self.pid), "--threads", "--idle", "--nonblocking",
                 "--format", "raw", "--rate", "200", "-o", self.raw],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attach before the run starts
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def summary(self, top: int = 8) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
        """
        From the raw stacks: ``(function (file:line), share of busy
        samples)`` ranked by own (leaf) samples, and per thread group with
        busy samples ``(thread, share of busy samples, fraction of the
        group's samples that are busy)``.
        A sample is idle when its leaf waits: epoll, a condition, a queue or
        the thread pool's coordinator lock.
        """
        own: dict[str, int] = {}
        busy: dict[str, int] = {}
        seen: dict[str, int] = {}
        members: dict[str, set[str]] = {}
        total = 0
        try:
            with open(self.raw) as f:
                for line in f:
                    stack, _, count = line.rstrip("\n").rpartition(" ")
                    frames = stack.split(";")
                    thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
                    thread = re.sub(r"-\d+$", "-*", thread)
                    members.setdefault(thread, set()).add(frames[0])
                    n = int(count)
                    seen[thread] = seen.get(thread, 0) + n
                    if len(frames) < 2 or _idle(frames[-1]):
                        continue
                    total += n
                    leaf = _short(frames[-1])
                    own[leaf] = own.get(leaf, 0) + n
                    busy[thread] = busy.get(thread, 0) + n
        except (OSError, ValueError):
            return [], []
        if not total:
            return [], []
        functions = [(name, n / total) for name, n in sorted(own.items(), key=lambda i: -i[1])[:top]]
        threads = [("{} ×{}".format(name, len(members[name])) if len(members[name]) > 1 else name,
                    busy[name] / total, busy[name] / seen[name])
                   for name in sorted(busy, key=lambda name: -busy[name])]
        return functions, threads


def _idle(frame: str) -> bool:
    # Waiting, not working: epoll_wait, a pool thread waiting for work, the
    # pool's coordinator lock.
    return any(word in frame for word in ("EPollReactor.doPoll (", "wait (threading.py",
                                          "get (queue.py", "LockWorker.do (twisted/_threads/_threadworker.py:142)"))


def _short(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame
    name, path, line = match.groups()
    for marker in ("site-packages/", REPO + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return "{} ({}:{})".format(name, path, line)


# -- reporting ---------------------------------------------------------------

class Sample:
    """
    One measured run of one target.
    """

    def __init__(self, size: int, seconds: float, meter: Meter, client_cpu: float = 0.0) -> None:
        self.size = size
        self.seconds = seconds
        self.speed = mib_s(size, seconds)
        self.cpu = meter.cpu
        self.sched = meter.sched
        self.minflt = meter.minflt
        self.peak_rss = meter.peak_rss
        self.client_cpu = client_cpu

    def per_gib(self, value: float) -> float:
        """
        ``value`` per GiB moved in this run.
        """
        return value / (self.size / GIB)


class Summary:
    """
    Medians over the runs of one target.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.runs = len(samples)
        speeds = [s.speed for s in samples]
        self.speed = median(speeds)
        self.low, self.high = min(speeds), max(speeds)
        self.cpu = median([s.per_gib(s.cpu) for s in samples])
        self.sched = median([s.per_gib(s.sched) for s in samples])
        self.client_cpu = median([s.per_gib(s.client_cpu) for s in samples])
        self.minflt = median([s.per_gib(s.minflt) for s in samples])
        self.peak_rss = max(s.peak_rss for s in samples)
        self.rss_runs = [s.peak_rss for s in samples]

    def cells(self) -> list[str]:
        """
        MiB/s median, range, CPU psutil, CPU schedstat.
        """
        return ["{:.0f}".format(self.speed), "{:.0f}–{:.0f}".format(self.low, self.high),
                "{:.3f}".format(self.cpu), "{:.3f}".format(self.sched)]


def machine_facts() -> dict[str, str]:
    """
    What the figures depend on.
    """
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    curl_version = subprocess.run([CURL, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    import twisted
    return {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "cpu": model or platform.machine(),
        "memory": "{:.1f} GiB".format(psutil.virtual_memory().total / GIB),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "nginx": nginx.split("/", 1)[-1],
        "curl": " ".join(curl_version.split()[:2]),
    }


def header_lines(command: str, runs: int, extra: str = "") -> list[str]:
    """
    The lines every section starts with: date, command, machine, runs.
    """
    facts = machine_facts()
    lines = [
        "- Date: {}".format(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        "- Command: `{}`".format(command),
        "- Machine: nproc {nproc}, kernel {kernel}, {cpu}, {memory} RAM; Python {python}, "
        "Twisted {twisted}, nginx {nginx}, {curl}".format(**facts),
        "- Runs: {} per target, alternating daemon/reference order; figures are medians{}".format(
            runs, extra),
    ]
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """
    A Markdown table.
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def verdict(ok: bool) -> str:
    """
    The word for a target line.
    """
    return "**met**" if ok else "**MISSED**"


def mib_s(size: int, seconds: float) -> float:
    """
    Throughput in MiB/s.
    """
    return size / MIB / seconds if seconds > 0 else float("nan")


def profile_lines(profiler: Profiler, title: str) -> list[str]:
    """
    Markdown lines naming the hottest functions and threads of a profiled run.
    """
    functions, threads = profiler.summary()
    if not functions:
        return ["", "_{}: no profile (py-spy missing or could not attach)._".format(title)]
    lines = ["", "{} — `py-spy record --idle --threads` at 200 Hz; a sample is *busy* unless its thread"
             " waits (epoll, pool queue, pool lock), time inside syscalls counts as busy; raw stacks in"
             " `{}`:".format(title, os.path.relpath(profiler.raw, REPO)), ""]
    lines.append("- threads: " + "; ".join(
        "{} busy {:.0%} of its samples ({:.0%} of all busy samples)".format(name, fraction, share)
        for name, share, fraction in threads))
    lines.append("- busy samples by function (own time):")
    lines += ["  - {:.0%} `{}`".format(share, name) for name, share in functions]
    return lines



SECTION_ORDER = ("summary", "downloads", "uploads", "concurrent", "flood", "notes")


def write_section(key: str, title: str, body: Sequence[str]) -> None:
    """
    Replace (or add) the section ``key`` of ``bench/RESULTS.md``, keeping the
    others.
    """
    sections: dict[str, str] = {}
    head = ("# Benchmark results\n\nWritten by `bench/*.py` (see `bench/README.md`); each script "
            "rewrites only its own section.\n")
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            text = f.read()
        parts = re.split(r"(?m)^<!-- section: (\w+) -->\n", text)
        head = parts[0]
        for name, content in zip(parts[1::2], parts[2::2]):
            sections[name] = content
    sections[key] = "## {}\n\n{}\n\n".format(title, "\n".join(body).strip("\n"))
    order = [k for k in SECTION_ORDER if k in sections] + [k for k in sections if k not in SECTION_ORDER]
    with open(RESULTS + ".tmp", "w") as f:
        f.write(head.rstrip("\n") + "\n\n")
        for name in order:
            f.write("<!-- section: {} -->\n{}".format(name, sections[name].rstrip("\n") + "\n\n"))
    os.replace(RESULTS + ".tmp", RESULTS)


def this_command() -> str:
    """
    How this process was started, relative to the repository.
    """
    python = os.path.relpath(PYTHON, REPO) if PYTHON.startswith(REPO) else PYTHON
    args = [os.path.relpath(a, REPO) if os.path.isabs(a) and a.startswith(REPO) else a for a in sys.argv]
    return " ".join([python, *args])


def arguments(description: str, runs: int) -> argparse.ArgumentParser:
    """
    The options every benchmark script takes.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help="runs per target (default %(default)s)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep bench/out/data/random-1GiB.bin for the next invocation")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy run done when a target is missed")
    return parser


def main_for(run: Callable[..., dict[str, bool]], description: str, runs: int) -> None:
    """
    The command line of one benchmark script: parse the options, measure on
    the shared test file, print each target's verdict.
    """
    args = arguments(description.strip().split("\n\n")[0], runs=runs).parse_args()
    with data_file(keep=args.keep_data) as data:
        verdicts = run(data, args.runs, this_command(), profile=not args.no_profile)
    for name, ok in verdicts.items():
        print("{}: {}".format("met   " if ok else "MISSED", name))


def verdict_lines(verdicts: dict[str, bool]) -> list[str]:
    """
    The "Targets:" list of a section.
    """
    return ["", "Targets:", ""] + ["- {}: {}".format(name, verdict(ok)) for name, ok in verdicts.items()]


def profile_if_missed(enabled: bool, verdicts: dict[str, bool], pid: int, name: str,
                      what: str, count: int, workload: Callable[[], Any]) -> list[str]:
    """
    When a target was missed (and profiling is on and py-spy available),
    profile the daemon over ``count`` more runs of ``workload`` and return
    the section's profile lines; else nothing.
    """
    if not enabled or all(verdicts.values()):
        return []
    profiler = Profiler(pid, name)
    if not profiler.available:
        return []
    log("a target was missed: profiling the daemon over {} {}".format(count, what))
    with profiler:
        for _ in range(count):
            workload()
    return profile_lines(profiler, "Profile of the daemon during {} extra {}".format(count, what))
