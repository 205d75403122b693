"""
Node scale: the daemon's memory with many servers, and the Panel's latency while a busy node
serves consoles, downloads and an upload at once.

    .venv/bin/python bench/node.py [--runs 3] [--seconds 30]

Two parts, each on fresh daemons (development panel + ``twistd -n wings``, process
environment), written to the "node" section of ``bench/RESULTS.md``:

* **memory**: the daemon's RSS once idle after boot (5 s after every server is loaded; median
  of 5 samples a second apart) with 1, 50 and 200 servers, and with 50 servers all running the
  example game.  Reference, in the same run: a bare ``python -c "import twisted.internet.reactor"``
  process (the interpreter, Twisted's reactor and the TLS stack it loads), what any Twisted
  daemon costs before its first line of code.
* **mix**: 50 servers, 10 of them running the example game and printing 100 lines/s each
  (``pace 100 <seconds>``), 3 console sockets per running server (30 sockets, 3,000 messages/s
  delivered), 4 concurrent downloads of a 256 MiB file and 1 upload of a 256 MiB file, each
  ``curl`` limited to 100 MiB/s (a fast player on a 1 Gbit/s link; unlimited transfers would
  measure how fast loopback copies on two cores, not the node), restarted as soon as it ends.
  Meanwhile a separate process plays the Panel: ``GET /api/servers/{uuid}`` (round robin over
  the 50) every 100 ms on a fresh connection, timing each call.  Reported: the daemon's CPU
  (share of one core), its peak RSS, the Panel calls' p50/p99, lines delivered, bytes moved.
  Reference, in the same run: the same Panel calls against the same daemon before the mix
  starts (servers loaded and the 10 games running, no sockets or transfers).

Figures are medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    CURL, MIB, PYTHON, REPO, SERVER, TOKEN, Daemon, Processes, header_lines, http_get, log, scratch,
    table, this_command, verdict, write_section,
)

from autobahn.twisted.websocket import (WebSocketClientFactory,  # noqa: E402
                                        WebSocketClientProtocol, connectWS)
from twisted.internet import defer, reactor, task, threads  # noqa: E402

GAME = "PYTHONPATH={} {} -m wings_twisted.devpanel.examplegame".format(
    shlex.quote(REPO), shlex.quote(sys.executable))
PACE = re.compile(rb'"pace \d{8} ')
TRANSFER_SIZE = 256 * MIB
RATE = "100M"
RSS_ONE_TARGET = 64 * MIB
RSS_200_TARGET = 80 * MIB
P99_TARGET = 0.050

# The Panel: GET /api/servers/{uuid} every PERIOD on a fresh connection; prints the latencies.
POLLER = r"""
import http.client, json, sys, time
host, port, token, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
uuids = sys.argv[5].split(",")
period, out, i = 0.1, [], 0
end = time.monotonic() + seconds
next_call = time.monotonic()
while time.monotonic() < end:
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/api/servers/" + uuids[i % len(uuids)],
                       headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    out.append([time.perf_counter() - started, response.status])
    i += 1
    next_call += period
    time.sleep(max(0.0, next_call - time.monotonic()))
print(json.dumps(out))
"""


def uuids(count: int) -> list[str]:
    """
    ``count`` fixed server uuids besides the benchmark's own ``SERVER``.
    """
    return [str(uuidlib.UUID(int=0x5E7 << 64 | i, version=4)) for i in range(count)]


def rss_settled(daemon: Daemon) -> float:
    """
    The daemon's RSS 5 s after boot: median of 5 samples a second apart.
    """
    time.sleep(5)
    samples = []
    for _ in range(5):
        samples.append(daemon.ps.memory_info().rss)
        time.sleep(1)
    return statistics.median(samples)


def reactor_reference(processes: Processes, base: str) -> float:
    """
    RSS of a bare Python process that imported Twisted's reactor (and so its TLS stack).
    """
    import psutil
    proc = processes.spawn([PYTHON, "-c", "import twisted.internet.reactor, time; time.sleep(60)"],
                           os.path.join(base, "reference.log"))
    ps = psutil.Process(proc.pid)
    time.sleep(3)
    value = statistics.median(ps.memory_info().rss for _ in range(3))
    processes.stop(proc)
    return value


def power(daemon: Daemon, uuid: str, action: str) -> None:
    import urllib.request
    request = urllib.request.Request(
        "{}/api/servers/{}/power".format(daemon.url, uuid), method="POST",
        data=json.dumps({"action": action}).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def states(daemon: Daemon, names: list[str]) -> list[str]:
    result = []
    for uuid in names:
        _, body = http_get("{}/api/servers/{}".format(daemon.url, uuid),
                           {"Authorization": "Bearer " + TOKEN})
        result.append(json.loads(body or b"{}").get("state", "?"))
    return result


def start_games(daemon: Daemon, names: list[str]) -> None:
    for uuid in names:
        power(daemon, uuid, "start")
    deadline = time.monotonic() + 120
    while set(states(daemon, names)) != {"running"}:
        if time.monotonic() > deadline:
            raise RuntimeError("games not running: {}".format(states(daemon, names)))
        time.sleep(0.5)


def memory_case(servers: int, running: bool) -> float:
    with Processes() as processes, scratch("node-memory") as base:
        more = {uuid: {"name": "s{}".format(i), "disk_space": 0} for i, uuid in
                enumerate(uuids(servers - 1))}
        fixture: dict[str, Any] = {"invocation": GAME, "done": "Server is ready"} if running else {}
        for settings in more.values():
            settings.update(fixture)
        daemon = Daemon(processes, base, server=fixture, more_servers=more)
        if running:
            start_games(daemon, daemon.uuids)
        return rss_settled(daemon)


class Console(WebSocketClientProtocol):
    """
    One console socket; counts the game's pace lines in the raw stream once authenticated.
    """

    def onOpen(self) -> None:
        from wings_twisted.devpanel.tokens import mint_websocket
        self.lines = 0
        self.sendMessage(('{"event":"auth","args":["%s"]}' % mint_websocket(
            TOKEN, self.factory.uuid, permissions=["*"])).encode())

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if b"auth success" in payload:
            self.factory.authed(self)
            if not self.factory.driver:
                self.factory.driver = self
            else:
                self.dataReceived = self.scan  # type: ignore[method-assign]
        else:
            self.scan(payload)

    def scan(self, data: bytes) -> None:
        self.lines += len(PACE.findall(data))

    def command(self, text: str) -> None:
        self.sendMessage(('{"event":"send command","args":["%s"]}' % text).encode())


class ConsoleFactory(WebSocketClientFactory):
    protocol = Console

    def __init__(self, url: str, origin: str, uuid: str, ready: defer.Deferred[None],
                 count: int) -> None:
        super().__init__(url, origin=origin)
        self.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                                utf8validateIncoming=False)
        self.uuid = uuid
        self.driver: Console | None = None
        self.clients: list[Console] = []
        self._ready = ready
        self._count = count

    def authed(self, client: Console) -> None:
        self.clients.append(client)
        if len(self.clients) == self._count and not self._ready.called:
            self._ready.callback(None)


def poll_panel(daemon: Daemon, names: list[str], seconds: float) -> subprocess.Popen[bytes]:
    host, port = daemon.url.rsplit("/", 1)[-1].split(":")
    return subprocess.Popen([PYTHON, "-c", POLLER, host, port, TOKEN, str(seconds), ",".join(names)],
                            stdout=subprocess.PIPE)


def latencies(poller: subprocess.Popen[bytes]) -> list[float]:
    out, _ = poller.communicate(timeout=600)
    calls = json.loads(out)
    bad = [status for _, status in calls if status != 200]
    if bad:
        raise RuntimeError("Panel calls failed: {}".format(bad[:5]))
    return [seconds for seconds, _ in calls]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Transfers:
    """
    ``curl`` downloads and uploads kept going (each restarted when it ends) until ``stop``.
    """

    def __init__(self, daemon: Daemon, source: str, downloads: int, uploads: int) -> None:
        self.daemon, self.source = daemon, source
        self.moved = 0
        self.failed = 0
        self._stopping = False
        self._running: list[subprocess.Popen[bytes]] = []
        self._loops = [threads.deferToThread(self._loop, "download") for _ in range(downloads)]
        self._loops += [threads.deferToThread(self._loop, "upload") for _ in range(uploads)]

    def _loop(self, kind: str) -> None:
        while not self._stopping:
            if kind == "download":
                url = self.daemon.download_url("/node-bench.bin")
                argv = [CURL, "-s", "-S", "-o", "/dev/null", "--limit-rate", RATE,
                        "-w", "%{http_code} %{size_download}", url]
            else:
                url = self.daemon.upload_url("/uploads")
                argv = [CURL, "-s", "-S", "-o", "/dev/null", "--limit-rate", RATE,
                        "-w", "%{http_code} %{size_upload}",
                        "-F", "files=@{};filename=upload.bin".format(self.source), url]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self._running.append(process)
            out, _ = process.communicate()
            self._running.remove(process)
            if self._stopping:
                return
            code, _, size = out.decode().partition(" ")
            if code != "200":
                self.failed += 1
            else:
                self.moved += int(float(size or 0))

    async def stop(self) -> None:
        self._stopping = True
        for process in list(self._running):
            process.terminate()
        await defer.DeferredList(self._loops)


async def mix_run(seconds: float) -> dict[str, Any]:
    with Processes() as processes, scratch("node-mix") as base:
        others = uuids(49)
        running = [SERVER] + others[:9]
        game = {"invocation": GAME, "done": "Server is ready"}
        more = {uuid: dict({"name": "s{}".format(i), "disk_space": 0}, **(game if uuid in running else {}))
                for i, uuid in enumerate(others)}
        daemon = Daemon(processes, base, server=game, more_servers=more)
        source = os.path.join(base, "node-bench.bin")
        with open(source, "wb") as f:
            for _ in range(TRANSFER_SIZE // (8 * MIB)):
                f.write(os.urandom(8 * MIB))
        daemon.add_file(source, "node-bench.bin")
        os.makedirs(os.path.join(daemon.volume, "uploads"), exist_ok=True)
        await threads.deferToThread(start_games, daemon, running)

        # Reference: the Panel's calls with the games running and nothing else.
        quiet = await threads.deferToThread(latencies, poll_panel(daemon, daemon.uuids, seconds / 2))

        factories = []
        ready = []
        url = daemon.url.replace("http://", "ws://")
        for uuid in running:
            d: defer.Deferred[None] = defer.Deferred()
            factory = ConsoleFactory("{}/api/servers/{}/ws".format(url, uuid), daemon.panel_url, uuid, d, 3)
            for _ in range(3):
                connectWS(factory)
            factories.append(factory)
            ready.append(d)
        await defer.gatherResults(ready).addTimeout(60, reactor)

        ps = daemon.ps
        cpu0 = sum(ps.cpu_times()[:2])
        transfers = Transfers(daemon, source, downloads=4, uploads=1)
        poller = poll_panel(daemon, daemon.uuids, seconds)
        started = time.monotonic()
        for factory in factories:
            assert factory.driver is not None
            factory.driver.command("pace 100 {}".format(int(seconds)))
        peak = 0
        while poller.poll() is None:
            peak = max(peak, ps.memory_info().rss)
            await task.deferLater(reactor, 0.2, lambda: None)
        wall = time.monotonic() - started
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        busy = await threads.deferToThread(latencies, poller)
        await transfers.stop()
        await task.deferLater(reactor, 2, lambda: None)   # the last pace lines
        delivered = sum(c.lines for f in factories for c in f.clients)
        expected = len(running) * 3 * 100 * int(seconds)
        for factory in factories:
            for client in factory.clients:
                client.transport.loseConnection()
        return {
            "cpu_share": cpu / wall, "peak_rss": peak, "moved": transfers.moved, "wall": wall,
            "failed": transfers.failed, "delivered": delivered, "expected": expected,
            "p50": percentile(busy, 0.5), "p99": percentile(busy, 0.99), "max": max(busy),
            "quiet_p50": percentile(quiet, 0.5), "quiet_p99": percentile(quiet, 0.99),
            "calls": len(busy),
        }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", default="memory,mix")
    args = parser.parse_args(argv)
    parts = args.only.split(",")
    lines = header_lines(this_command(), args.runs)
    lines.append("- Load before the run (`uptime`): {}".format(
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()))
    if "memory" in parts:
        cases = [("1 server", 1, False), ("50 servers", 50, False), ("200 servers", 200, False),
                 ("50 servers, all running the example game", 50, True)]
        results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        reference: list[float] = []
        for run in range(args.runs):
            with Processes() as processes, scratch("node-reference") as base:
                reference.append(reactor_reference(processes, base))
            for name, count, running in cases:
                log("memory run {}: {}".format(run + 1, name))
                results[name].append(await threads.deferToThread(memory_case, count, running))
        ref = statistics.median(reference)
        rows = [["bare `import twisted.internet.reactor` (reference)", "{:.1f}".format(ref / MIB), ""]]
        for name, _, _ in cases:
            value = statistics.median(results[name])
            rows.append([name, "{:.1f}".format(value / MIB), "+{:.1f}".format((value - ref) / MIB)])
        one, two_hundred = statistics.median(results["1 server"]), statistics.median(results["200 servers"])
        lines += ["", "### Idle RSS after boot", ""]
        lines += table(["daemon", "RSS MiB (median)", "over the bare reactor MiB"], rows)
        lines += ["", "Targets:", "",
                  "- idle RSS ≤ 64 MiB with 1 server ({:.1f} MiB): {}".format(
                      one / MIB, verdict(one <= RSS_ONE_TARGET)),
                  "- idle RSS ≤ 80 MiB with 200 servers ({:.1f} MiB): {}".format(
                      two_hundred / MIB, verdict(two_hundred <= RSS_200_TARGET))]
    if "mix" in parts:
        runs = []
        for run in range(args.runs):
            log("mix run {}".format(run + 1))
            runs.append(await mix_run(args.seconds))

        def med(key: str) -> float:
            return statistics.median(r[key] for r in runs)

        lines += ["", "### The mix: 50 servers, 10 games at 100 lines/s, 30 consoles, 4 downloads + 1 upload", "",
                  "{:.0f} s per run; {} Panel calls per run during the mix.".format(args.seconds, runs[0]["calls"]),
                  ""]
        lines += table(
            ["run", "daemon CPU (share of a core)", "peak RSS MiB", "Panel p50 ms", "Panel p99 ms",
             "Panel max ms", "quiet p50 ms", "quiet p99 ms", "lines delivered / sent", "MiB moved",
             "transfer failures"],
            [[i + 1, "{:.0%}".format(r["cpu_share"]), "{:.1f}".format(r["peak_rss"] / MIB),
              "{:.1f}".format(r["p50"] * 1000), "{:.1f}".format(r["p99"] * 1000),
              "{:.1f}".format(r["max"] * 1000), "{:.1f}".format(r["quiet_p50"] * 1000),
              "{:.1f}".format(r["quiet_p99"] * 1000), "{}/{}".format(r["delivered"], r["expected"]),
              "{:.0f}".format(r["moved"] / MIB), r["failed"]] for i, r in enumerate(runs)])
        lines += ["", "Medians: daemon CPU {:.0%} of a core, peak RSS {:.1f} MiB, Panel p99 {:.1f} ms "
                  "(quiet reference {:.1f} ms).".format(med("cpu_share"), med("peak_rss") / MIB,
                                                        med("p99") * 1000, med("quiet_p99") * 1000),
                  "", "Target: Panel-call p99 < 50 ms in the mix ({:.1f} ms): {}".format(
                      med("p99") * 1000, verdict(med("p99") < P99_TARGET))]
    write_section("node", "Node scale: memory per server and the Panel's latency on a busy node", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    task.react(lambda _reactor: defer.ensureDeferred(main(sys.argv[1:])))
