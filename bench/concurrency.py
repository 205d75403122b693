"""
Concurrency: 64 ranged downloads at once (64 distinct 16 MiB ranges covering
the 1 GiB file, one ``curl --parallel`` process, one freshly signed token per
transfer, all for the same file) against wings-twisted and against nginx.

    .venv/bin/python bench/concurrency.py [--runs N] [--keep-data] [--no-profile]

Aggregate throughput is 1 GiB over the wall time of the whole curl run.
Also counts the kernel's listen-queue overflows during each run (a connect
that overflows is retried by the client's SYN timer, about 1 s later).
Writes the "concurrent" section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (main_for, profile_if_missed, verdict_lines, MIB, Background, Daemon, Meter, Nginx, Processes, Sample, Summary,  # noqa: E402
                    alternate, curl, header_lines, listen_overflows, log, median,
                    ratio, scratch, table, warm, write_section)

CLIENTS = 64
SPAN = 16 * MIB
NAME = "big.bin"
TARGETS = ("daemon", "nginx")
RSS_LIMIT = 64 * MIB
FORMAT = "%{http_code} %{size_download} %{time_connect} %{time_starttransfer} %{time_total}\\n"


class Run:
    """
    One batch of 64 transfers: the sample plus connection timings.
    """

    def __init__(self, sample: Sample, overflows: int, connect_max: float, ttfb_max: float) -> None:
        self.sample = sample
        self.overflows = overflows
        self.connect_max = connect_max
        self.ttfb_max = ttfb_max


def batch(urls: list[str], meter: Meter) -> Run:
    """
    ``curl --parallel`` over ``urls``, range ``i`` of the file for URL ``i``.
    """
    args = ["--parallel", "--parallel-max", str(CLIENTS), "--parallel-immediate"]
    for i, url in enumerate(urls):
        if i:
            args.append("--next")
        args += ["-r", "{}-{}".format(i * SPAN, (i + 1) * SPAN - 1), "-o", "/dev/null", "-w", FORMAT, url]
    overflows = listen_overflows()
    with meter:
        start = time.monotonic()
        out, client_cpu = curl(args)
        wall = time.monotonic() - start
    overflows = listen_overflows() - overflows
    lines = [line.split() for line in out.strip().splitlines()]
    if len(lines) != CLIENTS or any(line[0] != "206" or int(line[1]) != SPAN for line in lines):
        raise RuntimeError("unexpected transfers: {}".format(sorted({(l[0], l[1]) for l in lines})))
    return Run(Sample(CLIENTS * SPAN, wall, meter, client_cpu), overflows,
               max(float(line[2]) for line in lines), max(float(line[3]) for line in lines))


def measure(daemons: dict[str, Daemon], nginx: Nginx, data: str, runs: int) -> dict[str, list[Run]]:
    """
    ``target -> runs``, alternating.
    """
    nginx_url = "{}/{}".format(nginx.url, os.path.basename(data))

    def once(target: str, meter: Meter) -> Run:
        if target in daemons:
            return batch([daemons[target].download_url("/" + NAME) for _ in range(CLIENTS)], meter)
        return batch([nginx_url] * CLIENTS, meter)

    for target in TARGETS:
        once(target, Meter([]))  # unrecorded warm-up
    results: dict[str, list[Run]] = {}
    for run, target in alternate(runs, TARGETS):
        if target in daemons:
            daemon = daemons[target]
            result = once(target, Meter(daemon.processes(), daemon.ps))
        else:
            result = once(target, nginx.meter())
        results.setdefault(target, []).append(result)
        log("64 × 16 MiB / {} run {}: {:.0f} MiB/s, {} listen overflows, slowest connect {:.3f} s".format(
            target, run + 1, result.sample.speed, result.overflows, result.connect_max))
    return results


def report(results: dict[str, list[Run]], runs: int, command: str, background: Background,
           extra: list[str]) -> tuple[list[str], dict[str, bool]]:
    """
    The section body and the targets.
    """
    rows = []
    summary = {}
    for target in TARGETS:
        s = summary[target] = Summary([r.sample for r in results[target]])
        overflows = [r.overflows for r in results[target]]
        rows.append([target] + s.cells() + [
            "{:.2f}".format(s.client_cpu),
            "{} ({} runs)".format(sum(overflows), sum(1 for o in overflows if o)),
            "{:.3f}".format(median([r.connect_max for r in results[target]])),
            "{:.3f}".format(median([r.ttfb_max for r in results[target]])),
            "{:.1f}".format(s.peak_rss / MIB)])
    daemon, nginx = summary["daemon"], summary["nginx"]
    speed_ratio = ratio(daemon.speed, nginx.speed)
    rows.append(["**daemon / nginx**", "**{:.2f}×**".format(speed_ratio), "",
                 "**{:.2f}×**".format(ratio(daemon.cpu, nginx.cpu)),
                 "**{:.2f}×**".format(ratio(daemon.sched, nginx.sched)), "", "", "", "", ""])
    verdicts = {
        "aggregate throughput ≥ 0.9× nginx with 64 concurrent ranged downloads ({:.2f}×)".format(
            speed_ratio): speed_ratio >= 0.9,
        "daemon peak RSS < 64 MiB in every run (max {:.1f} MiB)".format(daemon.peak_rss / MIB):
            daemon.peak_rss < RSS_LIMIT,
    }
    body = header_lines(command, runs, "; one unrecorded warm-up batch per target first")
    body += [
        "- Client: one `curl -s -S --parallel --parallel-max 64 --parallel-immediate` process with 64"
        " transfers `-r <i×16 MiB>-<(i+1)×16 MiB−1> -o /dev/null -w '…' URL` (a distinct 16 MiB range"
        " each, together the whole 1 GiB file; one freshly signed token per daemon transfer)",
        "- MiB/s = 1 GiB / wall time of the curl process; CPU as in the downloads section; listen"
        " overflows = delta of the kernel's `TcpExt ListenOverflows` during the run (each one costs"
        " that connection a ~1 s SYN retransmission); slowest connect / first byte = the max over the"
        " 64 transfers of curl's `time_connect` / `time_starttransfer`, median over runs",
        "- Both listen with a deep accept queue: the daemon's `tap.BACKLOG` (1024; Twisted's default"
        " of 50 overflowed in earlier runs, costing a 1 s SYN retry), nginx's default 511"
        ] + background.lines() + [""]
    body += table(["Server", "MiB/s (median)", "min–max", "CPU s/GiB psutil", "CPU s/GiB schedstat",
                   "curl CPU s/GiB", "listen overflows (runs affected)", "slowest connect s",
                   "slowest first byte s", "peak RSS MiB (nginx: worker)"], rows)
    body += verdict_lines(verdicts)
    body += extra
    return body, verdicts


def run(data: str, runs: int, command: str, *, profile: bool = True) -> dict[str, bool]:
    """
    Measure, write the section, return the targets.
    """
    warm(data)
    with scratch("concurrent") as base, Processes() as processes:
        daemon = Daemon(processes, base)
        daemon.add_file(data, NAME)
        nginx = Nginx(processes, base, os.path.dirname(data))
        with Background() as background:
            results = measure({"daemon": daemon}, nginx, data, runs)
        body, verdicts = report(results, runs, command, background, [])
        extra = profile_if_missed(
            profile, verdicts, daemon.pid, "concurrent", "batches", 3,
            lambda: batch([daemon.download_url("/" + NAME) for _ in range(CLIENTS)], Meter([])))
        if extra:
            body, verdicts = report(results, runs, command, background, extra)
    write_section("concurrent", "Concurrency: 64 simultaneous 16 MiB Range downloads, daemon vs nginx", body)
    return verdicts


if __name__ == "__main__":
    main_for(run, __doc__, runs=9)
