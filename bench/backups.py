"""
Backups: (a) a local backup of the 1 GiB tree of ``bench/archives.py`` (one 512 MiB file of random
bytes + 20,000 small text files) against ``tar c | pigz -1`` of the same tree in the same run, and
(c) an S3 backup of it to SeaweedFS (``tools/s3-server.sh``) through the development panel's
presigned part URLs.

    .venv/bin/python bench/backups.py [--runs N] [--keep-data] [--no-profile]

The tree is made once in ``bench/out/data/archive-tree`` (kept with ``--keep-data``), read once so
the page cache is warm, and hard-linked into the daemon's server volume.  A local run is timed from
``POST /api/servers/{uuid}/backup`` to the archive appearing under its final name (the writer
renames it when complete: archive, SHA-1 and size done); an S3 run until the panel has completed
the multipart upload (the object exists in the bucket).  Every run is followed by ``sync``,
removal of what it wrote, ``sync``; local runs alternate with ``tar c | pigz -1`` (order reversed
every other run) after one unrecorded warm-up of each.  Writes the "backups" section of
``bench/RESULTS.md`` with the load (``uptime``) before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid as uuidlib
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from archives import TREE, Run, _alternate, _shell, clean, make_tree, warm_tree  # noqa: E402
from common import (  # noqa: E402
    MIB,
    REPO,
    SERVER,
    TOKEN,
    Background,
    Daemon,
    Meter,
    Processes,
    arguments,
    header_lines,
    log,
    median,
    mib_s,
    profile_if_missed,
    scratch,
    table,
    this_command,
    verdict_lines,
    write_section,
)

TARGET_RATIO = 0.9
LOCAL = ("daemon", "tar c | pigz -1")
PART_SIZE = 64 * MIB
S3_SCRIPT = os.path.join(REPO, "tools", "s3-server.sh")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class S3:
    """
    SeaweedFS on loopback for the S3 runs (stopped on exit).
    """

    def __init__(self, base: str) -> None:
        self.state = os.path.join(base, "s3")
        weed = os.path.join(os.path.dirname(sys.executable), "weed")
        env = dict(os.environ, WEED=weed if os.access(weed, os.X_OK) else "weed")
        port = 20000 + os.getpid() % 5000
        out = subprocess.run(["sh", S3_SCRIPT, "start", self.state, str(port)], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        self.endpoint, self.access, self.secret, self.region = out
        from wings_twisted.devpanel.objectstore import ObjectStore, ObjectStoreSettings
        self.settings = {"endpoint": self.endpoint, "bucket": "backups", "region": self.region,
                         "access_key": self.access, "secret_key": self.secret}
        self.store = ObjectStore(ObjectStoreSettings.from_dict(self.settings))
        self.store.ensure_bucket()

    def close(self) -> None:
        subprocess.run(["sh", S3_SCRIPT, "stop", self.state], check=False)


class Bench:
    """
    The daemon with the tree in its volume.
    """

    def __init__(self, processes: Processes, base: str, panel: dict[str, Any]) -> None:
        self.base = base
        self.daemon = Daemon(processes, base, panel_overrides=panel)
        subprocess.run(["cp", "-al", TREE, os.path.join(self.daemon.volume, "tree")], check=True)
        self.parent = os.path.dirname(TREE)
        self.backups = os.path.join(base, "backups")
        self.out = os.path.join(base, "out")
        os.makedirs(self.out)

    def _start(self, adapter: str, backup: str) -> None:
        request = urllib.request.Request(
            "{}/api/servers/{}/backup".format(self.daemon.url, SERVER),
            data=json.dumps({"adapter": adapter, "uuid": backup, "ignore": ""}).encode(),
            method="POST",
            headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 202:
                raise RuntimeError("backup answered {}".format(response.status))

    def local(self, target: str) -> Run:
        if target == "daemon":
            backup = str(uuidlib.uuid4())
            path = os.path.join(self.backups, backup + ".tar.gz")
            meter = Meter(self.daemon.processes(), self.daemon.ps)
            with meter:
                started = time.monotonic()
                self._start("wings", backup)
                while not os.path.exists(path):
                    time.sleep(0.02)
                seconds = time.monotonic() - started
            run = Run(seconds, meter.sched, meter.peak_rss, os.path.getsize(path))
            time.sleep(0.5)  # the report to the panel
            clean(path)
            return run
        path = os.path.join(self.out, "ref.tar.gz")
        run = _shell(["sh", "-c", "tar cf - -C '{}' archive-tree | pigz -1 > '{}'".format(
            self.parent, path)])
        run.size = os.path.getsize(path)
        clean(path)
        return run

    def s3(self, store: Any) -> Run:
        backup = str(uuidlib.uuid4())
        # The panel auto-creates the backup row, without its server: "unknown/<uuid>.tar.gz".
        suffix = "/{}.tar.gz".format(backup)
        meter = Meter(self.daemon.processes(), self.daemon.ps)
        with meter:
            started = time.monotonic()
            self._start("s3", backup)
            while not any(k.endswith(suffix) for k in store.keys()):
                time.sleep(0.2)
                if time.monotonic() - started > 1800:
                    raise RuntimeError("the S3 backup did not complete")
            seconds = time.monotonic() - started
        [key] = [k for k in store.keys() if k.endswith(suffix)]
        size = _size(store, key)
        store.delete(key)
        os.sync()
        return Run(seconds, meter.sched, meter.peak_rss, size)


def _size(store: Any, key: str) -> int:
    answer = store._api.head_object(Bucket=store.bucket, Key=key)
    return int(answer["ContentLength"])


def run(runs: int, command: str, *, profile: bool, keep: bool) -> dict[str, bool]:
    make_tree(TREE)
    try:
        total = warm_tree(TREE)
        log("tree: {:.0f} MiB".format(total / MIB))
        with scratch("backups") as base, Processes() as processes:
            s3 = S3(base)
            try:
                panel = {"backup_storage": {"disk": "s3", "part_size": PART_SIZE,
                                            "auto_create": True, "s3": s3.settings}}
                bench = Bench(processes, base, panel)
                load_before = uptime()
                log("warm-up: daemon local backup, tar c | pigz -1")
                bench.local("daemon")
                bench.local("tar c | pigz -1")
                local: dict[str, list[Run]] = {}
                with Background() as background:
                    for number, target in _alternate(runs, LOCAL):
                        sample = bench.local(target)
                        local.setdefault(target, []).append(sample)
                        log("local / {} run {}: {:.1f} s".format(target, number + 1,
                                                                 sample.seconds))
                    remote = []
                    for number in range(runs):
                        sample = bench.s3(s3.store)
                        remote.append(sample)
                        log("s3 run {}: {:.1f} s".format(number + 1, sample.seconds))
                load_after = uptime()
                body, verdicts = report(local, remote, total, runs, command, background,
                                        load_before, load_after, [])
                extra = profile_if_missed(profile, verdicts, bench.daemon.pid, "backups",
                                          "local backups", 1, lambda: bench.local("daemon"))
                if extra:
                    body, verdicts = report(local, remote, total, runs, command, background,
                                            load_before, load_after, extra)
            finally:
                s3.close()
    finally:
        if not keep:
            shutil.rmtree(TREE, ignore_errors=True)
    write_section("backups", "Backups: local and S3 backups of a 1 GiB tree", body)
    return verdicts


def report(local: dict[str, list[Run]], remote: list[Run], total: int, runs: int, command: str,
           background: Background, before: str, after: str,
           extra: list[str]) -> tuple[list[str], dict[str, bool]]:
    daemon = median([r.seconds for r in local["daemon"]])
    pigz = median([r.seconds for r in local["tar c | pigz -1"]])
    s3 = median([r.seconds for r in remote])
    ratio = pigz / daemon if daemon else 0.0
    verdicts = {"local backup throughput >= {:.1f}x tar c | pigz -1".format(TARGET_RATIO):
                ratio >= TARGET_RATIO}
    rows = []
    for name, samples in (("daemon, local (`wings`)", local["daemon"]),
                          ("tar c \\| pigz -1", local["tar c | pigz -1"]),
                          ("daemon, S3 to SeaweedFS (64 MiB parts)", remote)):
        seconds = median([r.seconds for r in samples])
        rows.append([name, "{:.1f}".format(seconds), "{:.0f}".format(mib_s(total, seconds)),
                     "{:.1f}".format(median([r.cpu for r in samples])),
                     "{:.0f}".format(median([r.size for r in samples]) / MIB),
                     "{:.0f}".format(max(r.rss for r in samples) / MIB) if samples[0].rss else "—"])
    lines = header_lines(command, runs)
    lines += ["- Load: `{}` before, `{}` after".format(before, after)]
    lines += background.lines()
    lines += ["", "Throughput is of the tree's {:.0f} MiB of file contents.".format(total / MIB),
              ""]
    lines += table(["Target", "Seconds", "MiB/s", "CPU s", "Archive MiB", "Peak RSS MiB"], rows)
    lines += ["", "- Local backup at {:.2f}x the throughput of `tar c | pigz -1` (target "
              "{:.1f}x).".format(ratio, TARGET_RATIO),
              "- S3 backup: {:.0f} MiB/s of tree content end to end (archive written to the "
              "staging file, then uploaded in parts, then completed by the panel).".format(
                  mib_s(total, s3)),
              "- Every run (seconds): " + "; ".join(
                  "{} {}".format(name, ", ".join("{:.1f}".format(r.seconds) for r in samples))
                  for name, samples in (("daemon", local["daemon"]),
                                        ("pigz", local["tar c | pigz -1"]), ("s3", remote)))]
    lines += verdict_lines(verdicts)
    lines += extra
    return lines, verdicts


def main() -> None:
    args = arguments(__doc__.strip().split("\n\n")[0], runs=3).parse_args()
    verdicts = run(args.runs, this_command(), profile=not args.no_profile, keep=args.keep_data)
    for name, ok in verdicts.items():
        print("{}: {}".format("met   " if ok else "MISSED", name))


if __name__ == "__main__":
    main()
