"""
The Docker environment against podman's Docker-compatible API
(``tools/podman-engine.sh``), two figures side by side in one run:

1. **start → running**: the time from a ``start`` power action
   (``POST /api/servers/{uuid}/power``) until the daemon reports
   ``running``, for a container whose done-string is printed at once, vs
   ``podman start -a`` of an equivalent container from the CLI (from the
   command until the done-string arrives on its standard output).  The
   daemon's figure includes everything a start does: the Panel sync, the
   pre-start steps, removing the old container, creating a fresh one,
   attaching and starting it.  Target: ≤ 1.2× the CLI's median.
2. **stats CPU**: the daemon's CPU while 20 containers run and their stats
   streams are read (``psutil`` user+system of the daemon process over the
   measuring window).  Target: < 5 % of one core.

Runs alternate between the daemon and the CLI; medians and every run are
written to ``bench/RESULTS.md`` (section ``docker``).  The machine is shared:
other processes' CPU during the run is reported beside the figures.

    .venv/bin/python bench/docker.py [--runs N] [--window SECONDS]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (PYTHON, REPO, TOKEN, TOKEN_ID, Background, Meter, Processes,  # noqa: E402
                    _log_match, http_get, machine_facts, median, scratch, this_command,
                    wait_for, write_section)

ENGINE_SCRIPT = os.path.join(REPO, "tools", "podman-engine.sh")
IMAGE = "localhost/busybox-test"
EGG = 'echo "Done (ready)"; exec sleep 86400'
STATS_SERVERS = 20


def api(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """
    A node API call; its status.
    """
    import json
    import urllib.request
    request = urllib.request.Request(url + path, method=method, headers={
        "Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def state_of(url: str, server: str) -> str:
    """
    The server's state as ``GET /api/servers/{uuid}`` reports it.
    """
    import json
    status, body = http_get(url + "/api/servers/" + server, {"Authorization": "Bearer " + TOKEN})
    return str(json.loads(body)["state"]) if status == 200 else ""


class Engine:
    """
    podman's service in a short temporary directory (unix socket paths are
    limited to 107 bytes), stopped with ``stop``.
    """

    def __init__(self) -> None:
        self.state = tempfile.mkdtemp(prefix="wings-bench-", dir="/tmp")
        out = subprocess.run(["sh", ENGINE_SCRIPT, "start", self.state], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("podman-engine.sh start failed:\n" + out.stdout + out.stderr)
        self.socket = out.stdout.strip().splitlines()[-1]
        self.env = dict(os.environ, CONTAINERS_CONF=os.path.join(self.state, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(self.state, "storage.conf"))

    def podman(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """
        The podman CLI on this engine's storage.
        """
        return subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env,
                              timeout=60, **kwargs)

    def stop(self) -> None:
        """
        Remove everything.
        """
        subprocess.run(["sh", ENGINE_SCRIPT, "stop", self.state], capture_output=True, timeout=120)
        shutil.rmtree(self.state, ignore_errors=True)


def start_daemon(processes: Processes, base: str, engine: Engine,
                 servers: list[str]) -> tuple[str, psutil.Process]:
    """
    The development panel with ``servers`` and a daemon with the Docker
    driver; the daemon's URL and process.
    """
    import yaml

    panel_config = os.path.join(base, "devpanel.yml")
    with open(panel_config, "w") as f:
        yaml.safe_dump({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080",
                     "url": "http://127.0.0.1:8081"},
            "servers": {s: {"name": "bench", "image": "~" + IMAGE, "invocation": EGG,
                            "done": "Done (ready)", "stop": "^SIGKILL", "memory_limit": 64,
                            "allocation": "127.0.0.1:{}".format(31000 + index)}
                        for index, s in enumerate(servers)},
            "users": {},
        }, f)
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1",
               DOCKER_HOST="unix://" + engine.socket)
    panel_log = os.path.join(base, "devpanel.log")
    panel = processes.spawn([PYTHON, "-m", "wings_twisted.devpanel", "serve", "--config",
                             panel_config, "--listen", "tcp:0:interface=127.0.0.1"], panel_log,
                            env=env, cwd=REPO)
    import re
    port = int(wait_for(lambda: _log_match(panel_log, re.compile(
        r"listening at http://127\.0\.0\.1:(\d+)"), panel), "the panel").group(1))
    config = {
        "token_id": TOKEN_ID, "token": TOKEN, "remote": "http://127.0.0.1:{}".format(port),
        "api": {"host": "127.0.0.1", "port": 0},
        "system": {name: os.path.join(base, name) for name in (
            "root_directory", "log_directory", "data", "archive_directory", "backup_directory",
            "tmp_directory")},
        "environment": {"driver": "docker"},
        "docker": {"log_config": {"type": "json-file"}},
    }
    config["system"]["username"] = pwd.getpwuid(os.getuid()).pw_name
    config_path = os.path.join(base, "config.yml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
    log_path = os.path.join(base, "daemon.log")
    daemon = processes.spawn([twistd, "--pidfile=", "-n", "--logfile=-", "wings", "--config",
                              config_path], log_path, env=env, cwd=base)
    listening = wait_for(lambda: _log_match(log_path, re.compile(r"ApiSite starting on (\d+)"),
                                            daemon), "the daemon")
    url = "http://127.0.0.1:{}".format(listening.group(1))
    wait_for(lambda: all(state_of(url, s) == "offline" for s in servers), "the servers")
    return url, psutil.Process(daemon.pid)


def daemon_start(url: str, server: str) -> float:
    """
    Seconds from the power action to ``running`` (polled every 2 ms).
    """
    started = time.monotonic()
    if api(url, "POST", "/api/servers/{}/power".format(server), {"action": "start"}) != 202:
        raise RuntimeError("power start refused")
    while state_of(url, server) != "running":
        if time.monotonic() - started > 30:
            raise RuntimeError("the server did not reach running")
        time.sleep(0.002)
    return time.monotonic() - started


def daemon_kill(url: str, server: str) -> None:
    """
    Kill and wait for offline.
    """
    api(url, "POST", "/api/servers/{}/power".format(server), {"action": "kill"})
    wait_for(lambda: state_of(url, server) == "offline", "offline")
    time.sleep(0.5)   # the start's background work (stats stream) settles


def cli_start(engine: Engine) -> float:
    """
    Seconds from ``podman start -a`` to the done-string on its output.
    """
    started = time.monotonic()
    process = subprocess.Popen(["podman", "start", "-a", "reference"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=engine.env)
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.monotonic() - started
    if b"Done (ready)" not in line:
        raise RuntimeError("podman start -a printed {!r}".format(line))
    engine.podman("kill", "reference")
    process.wait(30)
    time.sleep(0.5)
    return elapsed


def measure(runs: int, window: float) -> dict[str, Any]:
    """
    Both benchmarks in one engine and daemon.
    """
    servers = [str(uuidlib.uuid4()) for _ in range(STATS_SERVERS)]
    engine = Engine()
    try:
        with Processes() as processes, scratch("docker") as base:
            try:
                return run_all(processes, base, engine, servers, runs, window)
            except Exception:
                # Keep the daemon's log for reading the failure.
                shutil.copy(os.path.join(base, "daemon.log"),
                            os.path.join(os.path.dirname(base), "docker-daemon.log"))
                raise
    finally:
        engine.stop()


def run_all(processes: Processes, base: str, engine: Engine, servers: list[str], runs: int,
            window: float) -> dict[str, Any]:
    """
    The measurements, on a started engine.
    """
    if True:
        if True:
            url, daemon = start_daemon(processes, base, engine, servers)
            daemon_runs: list[float] = []
            cli_runs: list[float] = []
            daemon_start(url, servers[0])       # warm-up: network, image, first container
            daemon_kill(url, servers[0])
            # The reference: the daemon's own container, cloned (same image, command,
            # TTY, limits, network and port bindings), started by the CLI.
            made = engine.podman("container", "clone", servers[0], "reference")
            if made.returncode != 0:
                raise RuntimeError(made.stderr)
            cli_start(engine)
            for run in range(runs):
                order = ("daemon", "cli") if run % 2 == 0 else ("cli", "daemon")
                for target in order:
                    if target == "daemon":
                        daemon_runs.append(daemon_start(url, servers[0]))
                        daemon_kill(url, servers[0])
                    else:
                        cli_runs.append(cli_start(engine))
                    print("{} run {}: {:.3f} s".format(
                        target, run + 1, (daemon_runs if target == "daemon" else cli_runs)[-1]),
                        flush=True)
            # One after the other: podman 4.3's runc fails some of 20 simultaneous
            # starts ("can't get final child's PID from pipe"); the daemon reports
            # those as failed starts, which is not what is measured here.
            for server in servers:
                if state_of(url, server) != "running":
                    daemon_start(url, server)
            time.sleep(6)                       # every stats stream delivered once
            windows: list[float] = []
            background: list[float] = []
            for _ in range(3):
                with Background() as other, Meter([daemon]) as meter:
                    time.sleep(window)
                windows.append(meter.cpu / window * 100)
                background.append(other.cpu / window * 100)
            for server in servers:
                api(url, "POST", "/api/servers/{}/power".format(server), {"action": "kill"})
        return {"daemon": daemon_runs, "cli": cli_runs, "stats": windows,
                "background": background}


HISTORY_MARK = "<!-- docker invocations -->"


def earlier_invocations() -> list[str]:
    """
    The invocation lines the ``docker`` section of RESULTS.md already has.
    """
    from common import RESULTS
    try:
        with open(RESULTS) as f:
            text = f.read()
    except OSError:
        return []
    section = text.partition("<!-- section: docker -->")[2].partition("<!-- section:")[0]
    history = section.partition(HISTORY_MARK)[2]
    return [line for line in history.splitlines() if line.startswith("- ")]


def report(result: dict[str, Any], runs: int, window: float) -> dict[str, bool]:
    """
    Write the ``docker`` section of RESULTS.md; the verdicts.
    """
    facts = machine_facts()
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    daemon, cli = median(result["daemon"]), median(result["cli"])
    stats = median(result["stats"])
    verdicts = {
        "start → running ≤ 1.2× `podman start -a` ({:.2f}×)".format(daemon / cli): daemon <= 1.2 * cli,
        "daemon CPU with 20 containers' stats < 5 % of one core ({:.2f} %)".format(stats): stats < 5,
    }
    lines = [
        "- Date: {}".format(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        "- Command: `{}`".format(this_command()),
        "- Machine: nproc {nproc}, kernel {kernel}, {cpu}, {memory} RAM; Python {python}, "
        "Twisted {twisted}; {podman} (runc, cgroupfs, json-file logs; "
        "`tools/podman-engine.sh`)".format(podman=podman, **facts),
        "- Shared, noisy machine: runs alternate daemon/CLI (order reversed every other run) "
        "after one unrecorded warm-up each; figures are medians, every run listed.",
        "",
        "### start → running, {} runs each".format(runs),
        "",
        "- daemon: `POST /api/servers/{{uuid}}/power {{\"action\":\"start\"}}` until `GET "
        "/api/servers/{{uuid}}` says `running` (polled every 2 ms); the egg is "
        "`{}`, image `~{}`, 64 MB limit. Includes the Panel sync, the pre-start steps, the "
        "image check, truncating the container's log, attaching and starting. The settings do "
        "not change between runs, so the stopped container is started again; a start with "
        "changed settings also removes and recreates it (about 60–100 ms more on this "
        "engine; the oldest invocation below predates that shortcut).".format(EGG, IMAGE),
        "- CLI: `podman start -a reference` until the done-string is read from its output, "
        "`reference` being `podman container clone` of the daemon's container (same image, "
        "command, TTY, limits, network and port bindings); `podman kill` between runs.",
        "",
        "| | median s | min–max s | every run (s) |",
        "|---|---|---|---|",
        "| daemon | {:.3f} | {:.3f}–{:.3f} | {} |".format(
            daemon, min(result["daemon"]), max(result["daemon"]),
            ", ".join("{:.3f}".format(v) for v in result["daemon"])),
        "| `podman start -a` | {:.3f} | {:.3f}–{:.3f} | {} |".format(
            cli, min(result["cli"]), max(result["cli"]),
            ", ".join("{:.3f}".format(v) for v in result["cli"])),
        "",
        "Ratio of the medians: **{:.2f}×**.".format(daemon / cli),
        "",
        "### Daemon CPU with {} running containers".format(STATS_SERVERS),
        "",
        "- {} windows of {:g} s after every server reached `running`; psutil user+system of "
        "the daemon process / wall time. Podman sends one stats document per container every "
        "5 s (Docker every second: about 5× the documents, so about 5× this figure's stats "
        "share).".format(len(result["stats"]), window),
        "",
        "| window | daemon % of one core | other processes (podman included) % of one core |",
        "|---|---|---|",
    ]
    for index, (value, other) in enumerate(zip(result["stats"], result["background"])):
        lines.append("| {} | {:.2f} | {:.1f} |".format(index + 1, value, other))
    lines += ["", "Median: **{:.2f} %** of one core.".format(stats), "", "Targets:", ""]
    lines += ["- {}: {}".format(name, "**met**" if ok else "**MISSED**")
              for name, ok in verdicts.items()]
    entry = "- {}: start → running {:.3f} s vs {:.3f} s = {:.2f}×; stats CPU {:.2f} % ({} runs, {:g} s " \
        "windows)".format(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), daemon, cli,
                          daemon / cli, stats, runs, window)
    history = [entry] + earlier_invocations()[:9]
    lines += ["", "### Every invocation (newest first, medians of each)", "", HISTORY_MARK] + history
    write_section("docker", "Docker environment: start latency and stats CPU (podman)", lines)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="runs per target (default 11)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds per CPU window (default 30)")
    args = parser.parse_args()
    result = measure(args.runs, args.window)
    for name, ok in report(result, args.runs, args.window).items():
        print("{}: {}".format("met   " if ok else "MISSED", name))


if __name__ == "__main__":
    main()
