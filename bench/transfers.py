"""
Transfers: a server holding the 1 GiB tree of ``archives.py`` (one 512 MiB file of random bytes +
20,000 small text files) moved between two daemons on loopback, against the local pipeline
``tar c -C src . | pigz -1 | pigz -d | tar x -C dst`` in the same invocation.

    .venv/bin/python bench/transfers.py [--runs N] [--keep-data] [--no-profile]

One development panel knowing two nodes, two ``twistd -n wings`` daemons (process driver).  A run
of the daemons is the panel's transfer (``POST /admin/servers/<uuid>/transfer``, what its admin
page posts): the source archives and pushes, the destination extracts and reports, the panel moves
the server and deletes it on the source; the run is timed from the admin call to the success
report the panel receives.  Runs go node1 → node2, then back, and so on, so each run's source is
the previous run's destination (its files freshly written, as on a real node).  The tree is made
once in ``bench/out/data/archive-tree`` (kept with ``--keep-data``), read once so the page cache
is warm, and hard-linked into node1's volume; the pipeline reads that tree.  Every run is followed
by ``sync``, removal of what it wrote (the panel's deletion, for the daemons), ``sync``.  Writes the
"transfers" section of ``bench/RESULTS.md``: medians, every run, both daemons' CPU and peak RSS
growth.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from archives import (RANDOM_SIZE, TEXT_TOTAL, TREE, Run, _shell, clean,  # noqa: E402
                      make_tree, warm_tree)
from common import (MIB, OUT, PYTHON, REPO, SERVER, Background, Meter, Processes,  # noqa: E402
                    _log_match, arguments, header_lines, log, median, profile_if_missed, ratio,
                    scratch, table, this_command, verdict_lines, wait_for, write_section)

TOKENS = {"node1": ("benchTokenId0001", "bench-node-one-token-0123456789abcdef0123456789abcdef01234"),
          "node2": ("benchTokenId0002", "bench-node-two-token-0123456789abcdef0123456789abcdef01234")}
RSS_LIMIT = 100 * MIB
TARGETS = ("daemons", "tar | pigz -1 | pigz -d | tar x")
PIPELINE = "tar c -C {src} . | pigz -1 | pigz -d | tar x -C {dst}"
LISTENING = re.compile(r"ApiSite starting on (\d+)")
PANEL = re.compile(r"listening at http://127\.0\.0\.1:(\d+)")


class Nodes:
    """
    The panel and the two daemons.
    """

    def __init__(self, processes: Processes, base: str) -> None:
        import pwd

        import yaml

        self.base = base
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        panel_config = os.path.join(base, "devpanel.yml")
        # Daemon URLs are not known yet: the panel learns them below, through its admin route's
        # state file being rewritten before it starts (the ports are fixed first).
        self.ports = {name: _free_port() for name in TOKENS}
        with open(panel_config, "w") as f:
            yaml.safe_dump({
                "node": {"token_id": TOKENS["node1"][0], "token": TOKENS["node1"][1],
                         "name": "node1",
                         "daemon_url": "http://127.0.0.1:{}".format(self.ports["node1"]),
                         "url": "http://127.0.0.1:8081"},
                "nodes": {"node2": {"token_id": TOKENS["node2"][0], "token": TOKENS["node2"][1],
                                    "daemon_url": "http://127.0.0.1:{}".format(
                                        self.ports["node2"])}},
                "servers": {SERVER: {"disk_space": 0, "name": "bench"}},
            }, f)
        panel_log = os.path.join(base, "devpanel.log")
        panel = processes.spawn([PYTHON, "-m", "wings_twisted.devpanel", "serve", "--config",
                                 panel_config, "--listen", "tcp:0:interface=127.0.0.1"],
                                panel_log, env=env, cwd=REPO)
        port = int(wait_for(lambda: _log_match(panel_log, PANEL, panel), "the panel").group(1))
        self.panel = "http://127.0.0.1:{}".format(port)
        self.daemons: dict[str, psutil.Process] = {}
        self.volumes: dict[str, str] = {}
        for name, (token_id, token) in TOKENS.items():
            home = os.path.join(base, name)
            os.makedirs(home)
            config = {
                "token_id": token_id, "token": token, "remote": self.panel,
                "api": {"host": "127.0.0.1", "port": self.ports[name]},
                "system": {key: os.path.join(home, key) for key in (
                    "root_directory", "log_directory", "data", "archive_directory",
                    "backup_directory", "tmp_directory")},
                "environment": {"driver": "process"},
            }
            config["system"]["user"] = {"uid": os.getuid(), "gid": os.getgid()}
            config["system"]["enable_log_rotate"] = False
            config["system"]["username"] = pwd.getpwuid(os.getuid()).pw_name
            config["system"]["sftp"] = {"bind_address": "127.0.0.1", "bind_port": 0}
            path = os.path.join(home, "config.yml")
            with open(path, "w") as f:
                yaml.safe_dump(config, f)
            twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
            log_path = os.path.join(home, "daemon.log")
            process = processes.spawn([twistd, "--pidfile=", "-n", "--logfile=-", "wings",
                                       "--config", path], log_path, env=env, cwd=home)
            wait_for(lambda: _log_match(log_path, LISTENING, process), "{} to listen".format(name))
            self.daemons[name] = psutil.Process(process.pid)
            self.volumes[name] = os.path.join(home, "data", SERVER)
        wait_for(lambda: os.path.isdir(self.volumes["node1"]), "node1 to load its server")
        self.idle_rss = {name: p.memory_info().rss for name, p in self.daemons.items()}

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.panel + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def transfer(self, source: str, destination: str) -> tuple[Run, dict[str, int]]:
        """
        One transfer of the server; the run and each daemon's peak RSS growth.
        """
        meters = {name: Meter([p], p) for name, p in self.daemons.items()}
        for meter in meters.values():
            meter.__enter__()
        started = time.monotonic()
        self._admin("POST", "/admin/servers/{}/transfer".format(SERVER), {"node": destination})

        def done() -> bool:
            records = self._admin("GET", "/admin/transfers")["data"]
            ours = [r for r in records if r["server"] == SERVER and r["new_node"] == destination]
            return bool(ours) and ours[-1]["successful"] is not None

        wait_for(done, "the transfer", timeout=3600)
        seconds = time.monotonic() - started
        for meter in meters.values():
            meter.__exit__(None, None, None)
        records = self._admin("GET", "/admin/transfers")["data"]
        if not records[-1]["successful"]:
            raise RuntimeError("the transfer failed; see the daemon logs in {}".format(self.base))
        world = os.path.join(self.volumes[destination], "tree", "world.bin")
        if os.path.getsize(world) != RANDOM_SIZE:
            raise RuntimeError("the destination has a wrong world.bin")
        wait_for(lambda: not os.path.exists(self.volumes[source]), "the source's deletion", 600)
        clean()
        cpu = sum(m.sched for m in meters.values())
        growth = {name: max(0, meters[name].peak_rss - self.idle_rss[name]) for name in meters}
        return Run(seconds, cpu, max(m.peak_rss for m in meters.values())), growth


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(nodes: Nodes, base: str, runs: int) -> tuple[dict[str, list[Run]], list[dict[str, int]]]:
    """
    Every run, alternating the daemons and the pipeline (order reversed every other run), after
    one unrecorded warm-up of each.
    """
    subprocess.run(["cp", "-al", TREE, os.path.join(nodes.volumes["node1"], "tree")], check=True)
    where = ["node1"]
    out = os.path.join(base, "pipeline-out")

    def daemons() -> tuple[Run, dict[str, int]]:
        source = where[0]
        destination = "node2" if source == "node1" else "node1"
        result = nodes.transfer(source, destination)
        where[0] = destination
        return result

    def pipeline() -> Run:
        os.makedirs(out)
        run = _shell(["sh", "-c", PIPELINE.format(src=TREE, dst=out)])
        if os.path.getsize(os.path.join(out, "world.bin")) != RANDOM_SIZE:
            raise RuntimeError("the pipeline extracted a wrong world.bin")
        clean(out)
        return run

    log("warm-up: a transfer, and the pipeline")
    daemons()
    pipeline()
    results: dict[str, list[Run]] = {t: [] for t in TARGETS}
    growth: list[dict[str, int]] = []
    for run in range(runs):
        for target in (TARGETS if run % 2 == 0 else tuple(reversed(TARGETS))):
            if target == "daemons":
                sample, grown = daemons()
                growth.append(grown)
            else:
                sample = pipeline()
            results[target].append(sample)
            log("{} run {}: {:.1f} s".format(target, run + 1, sample.seconds))
    return results, growth


def report(results: dict[str, list[Run]], growth: list[dict[str, int]], nodes: Nodes, runs: int,
           command: str, background: Background, extra: list[str]) -> tuple[list[str],
                                                                             dict[str, bool]]:
    """
    The section body and the targets.
    """
    size = RANDOM_SIZE + TEXT_TOTAL
    wall = {t: median([r.seconds for r in results[t]]) for t in TARGETS}
    speed = ratio(wall[TARGETS[1]], wall["daemons"])
    worst = {name: max(g[name] for g in growth) for name in TOKENS}
    rows = []
    for target in TARGETS:
        samples = results[target]
        rows.append([target.replace("|", "\\|"), "{:.2f}".format(wall[target]),
                     "{:.2f}–{:.2f}".format(min(r.seconds for r in samples),
                                           max(r.seconds for r in samples)),
                     "{:.0f}".format(size / MIB / wall[target]),
                     "{:.1f}".format(median([r.cpu for r in samples]))])
    rows.append(["**pipeline / daemons wall time**", "**{:.2f}×**".format(speed), "", "", ""])
    every = [[t.replace("|", "\\|")] + ["{:.2f}".format(r.seconds) for r in results[t]]
             for t in TARGETS]
    rss_rows = [[name, "{:.1f}".format(nodes.idle_rss[name] / MIB),
                 " / ".join("{:.1f}".format(g[name] / MIB) for g in growth)]
                for name in TOKENS]
    verdicts = {
        "throughput ≥ 0.8× the pipeline's ({:.2f}× its speed)".format(speed): speed >= 0.8,
        "each daemon's RSS growth < 100 MiB (node1 max {:.1f} MiB, node2 max {:.1f} MiB)".format(
            worst["node1"] / MIB, worst["node2"] / MIB): max(worst.values()) < RSS_LIMIT,
    }
    pigz = subprocess.run(["pigz", "--version"], capture_output=True, text=True)
    body = header_lines(command, runs, "; one unrecorded warm-up of each")
    body += [
        "- Load before the runs (`uptime`): {}".format(_uptime()),
        "- Tree: the `archives` tree (`world.bin`, 512 MiB random + 20,000 text files, 512 MiB),"
        " hard-linked into node1's volume; page cache warm",
        "- daemons: one development panel with nodes node1 and node2, two `twistd -n wings`"
        " (process driver, default `compression_level: best_speed`); the panel's"
        " `POST /admin/servers/<uuid>/transfer {\"node\": ...}` timed up to the destination's"
        " success report reaching the panel; directions alternate (node1→node2, node2→node1)",
        "- pipeline: `sh -c '{}'` ({})".format(PIPELINE.format(src="<tree>", dst="<dir>"),
                                              (pigz.stdout or pigz.stderr).strip()),
        "- CPU s: both daemons' threads (schedstat) / the pipeline's processes (getrusage of"
        " children); RSS growth: each daemon's peak (sampled every 20 ms and VmHWM) minus its RSS"
        " when idle after boot",
        "- After every run: `sync`, remove the output (for the daemons: the panel deletes the"
        " server on the source), `sync`",
    ] + background.lines() + [""]
    body += table(["Target", "wall s (median)", "min–max", "MiB/s", "CPU s"], rows)
    body += ["", "Every run, in seconds:", ""]
    body += table(["Target"] + ["run {}".format(i + 1) for i in range(runs)], every)
    body += ["", "Daemon memory (MiB): idle after boot, then peak growth in each run:", ""]
    body += table(["Daemon", "idle RSS", "growth per run"], rss_rows)
    body += verdict_lines(verdicts)
    body += NOTES + extra
    return body, verdicts


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


NOTES: list[str] = []


def run(runs: int, command: str, *, profile: bool, keep: bool) -> dict[str, bool]:
    """
    Make the tree, measure, write the section, return the targets.
    """
    import shutil
    make_tree(TREE)
    try:
        total = warm_tree(TREE)
        log("tree: {:.0f} MiB".format(total / MIB))
        with scratch("transfers") as base, Processes() as processes:
            nodes = Nodes(processes, base)
            with Background() as background:
                results, growth = measure(nodes, base, runs)
            with open(os.path.join(OUT, "transfers-runs.json"), "w") as f:
                json.dump({t: [vars(r) for r in rs] for t, rs in results.items()} | {
                    "growth": growth}, f, indent=1)
            body, verdicts = report(results, growth, nodes, runs, command, background, [])
            extra: list[str] = []
            for name in ("node1", "node2"):
                pid = nodes.daemons[name].pid
                extra += profile_if_missed(
                    profile, verdicts, pid, "transfers-" + name,
                    "transfers (profile of {})".format(name), 1,
                    lambda: nodes.transfer(*_next(nodes)))
            if extra:
                body, verdicts = report(results, growth, nodes, runs, command, background, extra)
    finally:
        if not keep:
            shutil.rmtree(TREE, ignore_errors=True)
    write_section("transfers", "Transfers: a 1 GiB server between two daemons vs"
                  " tar | pigz -1 | pigz -d | tar x", body)
    return verdicts


def _next(nodes: Nodes) -> tuple[str, str]:
    """
    (source, destination) for the next transfer: where the server is now, and the other node.
    """
    if os.path.isdir(nodes.volumes["node1"]):
        return "node1", "node2"
    return "node2", "node1"


def main() -> None:
    args = arguments(__doc__.strip().split("\n\n")[0], runs=5).parse_args()
    verdicts = run(args.runs, this_command(), profile=not args.no_profile, keep=args.keep_data)
    for name, ok in verdicts.items():
        print("{}: {}".format("met   " if ok else "MISSED", name))


if __name__ == "__main__":
    main()
