"""
Uploads: the 1 GiB file of random bytes sent as one multipart part
(``curl -F files=@file``) to wings-twisted (``POST /upload/file``), to nginx
storing the request body in a file (``bench/nginx.conf``, ``/upload``), and
to the receive-and-discard ceiling (``bench/sink_server.py``: the daemon's
real site with a body sink that drops the bytes).

    .venv/bin/python bench/uploads.py [--runs N] [--keep-data] [--no-profile]

Every run checks what arrived (the daemon's file is 1 GiB, nginx's stored body
and the sink's count equal curl's ``size_upload``), then flushes and deletes
what was written, so each run starts with a clean page cache.  Writes MiB/s,
CPU seconds per GiB, page faults and peak RSS into the "uploads" section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (main_for, profile_if_missed, verdict_lines, MIB, Background, Daemon, Meter, Nginx, Processes, Sample, SinkServer,  # noqa: E402
                    Summary, alternate, curl, header_lines, log, ratio, scratch, table, warm, write_section)

TARGETS = ("daemon", "nginx", "ceiling")
DIRECTORY = "/uploads"
UPLOADED = "upload.bin"
RSS_LIMIT = 64 * MIB
FORMAT = "%{http_code} %{size_upload} %{time_total} %header{x-received}"


class Targets:
    """
    The three servers and how to check and clean up after each.
    """

    def __init__(self, processes: Processes, base: str, data: str) -> None:
        self.data = data
        self.daemon = Daemon(processes, base)
        self.idle_rss = self.daemon.ps.memory_info().rss
        self.nginx = Nginx(processes, base, os.path.dirname(data))
        self.sink = SinkServer(processes, base)
        self.uploaded = os.path.join(self.daemon.volume, DIRECTORY.strip("/"), UPLOADED)

    def upload(self, target: str, *, rss: bool = True) -> Sample:
        """
        One measured upload to ``target``, checked and cleaned up.
        """
        if target == "daemon":
            url, meter = self.daemon.upload_url(DIRECTORY), Meter(self.daemon.processes(),
                                                                   self.daemon.ps if rss else None)
        elif target == "nginx":
            url, meter = self.nginx.url + "/upload", self.nginx.meter() if rss else Meter(self.nginx.processes())
        else:
            url, meter = self.sink.url + "/upload/file", Meter(self.sink.processes(),
                                                               self.sink.ps if rss else None)
        form = "files=@{};filename={}".format(self.data, UPLOADED)
        with meter:
            out, client_cpu = curl(["-o", "/dev/null", "-w", FORMAT, "-F", form, url])
        fields = out.split()
        code, body, seconds = int(fields[0]), int(fields[1]), float(fields[2])
        if code != 200:
            raise RuntimeError("{} upload answered {}".format(target, code))
        written = self._check(target, body, fields[3:])
        self._clean(written)
        return Sample(body, seconds, meter, client_cpu)

    def _check(self, target: str, body: int, received: list[str]) -> list[str]:
        if target == "daemon":
            size = os.path.getsize(self.uploaded)
            leftovers = [n for n in os.listdir(os.path.dirname(self.uploaded)) if n != UPLOADED]
            if size != os.path.getsize(self.data) or leftovers:
                raise RuntimeError("daemon stored {} bytes (want {}), leftovers {}".format(
                    size, os.path.getsize(self.data), leftovers))
            return [self.uploaded]
        if target == "nginx":
            stored = self.nginx.stored_bodies()
            if len(stored) != 1 or os.path.getsize(stored[0]) != body:
                raise RuntimeError("nginx stored {} (want one body of {} bytes)".format(
                    [(p, os.path.getsize(p)) for p in stored], body))
            return stored
        if received != [str(body)]:
            raise RuntimeError("the sink received {} of {} bytes".format(received, body))
        return []

    @staticmethod
    def _clean(written: list[str]) -> None:
        # Flush first so that no run inherits another's writeback, then delete.
        os.sync()
        for path in written:
            os.unlink(path)
        os.sync()


def measure(targets: Targets, runs: int) -> dict[str, list[Sample]]:
    """
    ``target -> samples``, runs alternating between the targets.
    """
    for target in TARGETS:
        # Unrecorded warm-up: the first upload into a fresh process or after
        # a while is much slower on this VM (fresh pages), for every server.
        sample = targets.upload(target, rss=False)
        log("warm-up {}: {:.0f} MiB/s".format(target, sample.speed))
    results: dict[str, list[Sample]] = {}
    for run, target in alternate(runs, TARGETS):
        sample = targets.upload(target)
        results.setdefault(target, []).append(sample)
        log("upload / {} run {}: {:.0f} MiB/s, CPU {:.2f} s".format(target, run + 1, sample.speed,
                                                                   sample.cpu))
    return results


def report(results: dict[str, list[Sample]], targets: Targets, runs: int, command: str,
           background: Background, extra: list[str]) -> tuple[list[str], dict[str, bool]]:
    """
    The section body and the targets.
    """
    summary = {target: Summary(results[target]) for target in TARGETS}
    daemon, nginx, ceiling = summary["daemon"], summary["nginx"], summary["ceiling"]
    rows = []
    for target, label in (("daemon", "daemon (multipart → file)"), ("nginx", "nginx (body → file)"),
                          ("ceiling", "ceiling (daemon site, body discarded)")):
        s = summary[target]
        rows.append([label] + s.cells() + ["{:.0f}".format(s.minflt),
                                           "{:.2f}".format(s.client_cpu),
                                           "{:.1f}".format(s.peak_rss / MIB)])
    vs_nginx = ratio(daemon.speed, nginx.speed)
    vs_ceiling = ratio(daemon.speed, ceiling.speed)
    rows.append(["**daemon / nginx**", "**{:.2f}×**".format(vs_nginx), "",
                 "**{:.2f}×**".format(ratio(daemon.cpu, nginx.cpu)),
                 "**{:.2f}×**".format(ratio(daemon.sched, nginx.sched)), "", "", ""])
    rows.append(["**daemon / ceiling**", "**{:.2f}×**".format(vs_ceiling), "",
                 "**{:.2f}×**".format(ratio(daemon.cpu, ceiling.cpu)),
                 "**{:.2f}×**".format(ratio(daemon.sched, ceiling.sched)), "", "", ""])
    verdicts = {
        "throughput ≥ 1.5× nginx's body-to-file rate ({:.2f}×)".format(vs_nginx): vs_nginx >= 1.5,
        "throughput ≥ 0.8× the receive-and-discard ceiling ({:.2f}×)".format(vs_ceiling): vs_ceiling >= 0.8,
        # The node-scale issue's targets on the same figures.
        "throughput ≥ 1.0× nginx's body-to-file rate, node-scale target ({:.2f}×)".format(vs_nginx):
            vs_nginx >= 1.0,
        "throughput ≥ 0.6× the receive-and-discard ceiling, node-scale target ({:.2f}×)".format(vs_ceiling):
            vs_ceiling >= 0.6,
        "daemon peak RSS < 64 MiB in every upload run (max {:.1f} MiB; idle after boot {:.1f} MiB)".format(
            daemon.peak_rss / MIB, targets.idle_rss / MIB): daemon.peak_rss < RSS_LIMIT,
    }
    body = header_lines(command, runs, "; one unrecorded warm-up upload per target first")
    body += [
        "- Client: `curl -s -S -o /dev/null -w '{}' -F 'files=@<1 GiB file>;filename={}' URL`"
        " (one part, body {} bytes); daemon: `POST /upload/file?token=…&directory={}` with"
        " `api.upload_limit: 4096`; nginx: `client_body_in_file_only on` + `proxy_pass` to itself"
        " without the body (`bench/nginx.conf`); ceiling: `bench/sink_server.py`".format(
            FORMAT, UPLOADED, results["daemon"][0].size, DIRECTORY),
        "- Checked every run: the daemon's file is exactly 1 GiB with no temporary file left, nginx's"
        " stored body and the sink's byte count equal curl's `size_upload`; after each run"
        " `sync`, delete, `sync` (the scratch directory is on ext4 under `bench/out/`)",
        "- CPU s/GiB as in the downloads section (psutil user+system; schedstat ns); minor page"
        " faults of the server process per GiB; peak RSS sampled every 20 ms + VmHWM"] + background.lines() + [""]
    body += table(["Server", "MiB/s (median)", "min–max", "CPU s/GiB psutil", "CPU s/GiB schedstat",
                   "minor faults/GiB", "curl CPU s/GiB", "peak RSS MiB (nginx: worker)"], rows)
    body += verdict_lines(verdicts)
    body += extra
    return body, verdicts


def run(data: str, runs: int, command: str, *, profile: bool = True) -> dict[str, bool]:
    """
    Measure, write the section, return the targets.
    """
    warm(data)
    with scratch("uploads") as base, Processes() as processes:
        targets = Targets(processes, base, data)
        with Background() as background:
            results = measure(targets, runs)
        body, verdicts = report(results, targets, runs, command, background, [])
        extra = profile_if_missed(profile, verdicts, targets.daemon.pid, "uploads", "uploads", 2,
                                  lambda: targets.upload("daemon", rss=False))
        if extra:
            body, verdicts = report(results, targets, runs, command, background, extra)
    write_section("uploads", "Uploads: 1 GiB multipart, daemon vs nginx vs receive-and-discard ceiling",
                  body)
    return verdicts


if __name__ == "__main__":
    main_for(run, __doc__, runs=7)
