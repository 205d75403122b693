"""
1 GiB SFTP ``put`` and ``get``: the daemon's SFTP server against OpenSSH's own ``sshd`` +
``sftp-server`` (Debian's ``openssh-server``, started here on a loopback port with a throwaway
host key and configuration), with the same client (OpenSSH's ``sftp``), cipher and MAC on both
(``aes128-ctr`` + ``hmac-sha2-256``: Conch has no AEAD ciphers).

Every run of each target is reported (wall time, MiB/s, server CPU seconds per GiB, server peak
RSS), the targets alternating.  Server CPU: the daemon process; for OpenSSH the per-connection
``sshd`` processes and ``sftp-server``, sampled every 20 ms while they live (a process's last
20 ms may be missed).  Targets (issue 8): at least 0.8x OpenSSH's throughput both ways, no run
slower than 1.5x its target's median, daemon RSS growth under 50 MiB during a transfer.

    .venv/bin/python bench/sftp.py [--runs 5] [--size-mib 1024] [--keep-data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time
from typing import Any

import psutil

from common import (GIB, MIB, SERVER, Daemon, Processes, data_file, free_port, log, scratch,
                    table, this_command, write_section)

ANALYSIS = """
What limits the daemon (py-spy, `record --rate 200` on the daemon during 512 MiB transfers): it
is CPU-bound on the reactor thread, at 4.5–5 CPU s/GiB for `get` and 6–7 for `put` against
OpenSSH's 2.3–3.2, and this 2-core machine is shared (load average 4–5 during these runs), so a
server needing twice the CPU gets a transfer about half as fast. Of the daemon's busy samples,
the part that is the same work OpenSSH does — `recv`/`send` syscalls (15 %), HMAC-SHA-256 (14 %)
and AES-CTR (8–11 %), all in C — is about 40 %; the rest is Conch's per-packet Python (buffer
slicing and copies in `SSHTransportBase.getPacket`, `NS`, channel bookkeeping) and the SFTP layer.
Fixed on the way: one `getrandom` per SSH packet for the padding (8 % of the put profile; now a
64 KiB buffer), answers written as one 32 KiB packet plus a 13-byte one (OpenSSH's client takes
32 KiB packets; answers of one reactor turn are now one channel write), 64 status packets where
one does, and one thread hop per 32 KiB write (11 % in `Condition.notify`; writes now go in
batches). On the loaded machine of earlier runs (load average 4–7) `get` met its target
(0.82–0.83x) and `put` missed it (0.60–0.77x); on a quiet machine OpenSSH, which has CPU to spare,
speeds up more than the daemon, which has none (`get` 184 against 305 MiB/s, `put` 137 against
218), and both miss (0.61–0.63x). A profile of a quiet `get` (py-spy, 200 Hz): HMAC-SHA-256 in C
is 23 % of the busy samples and AES-CTR 7 % (work OpenSSH does too), the rest is spread over
Conch's per-packet Python (`NS`, `sendPacket`, channel and connection bookkeeping, Deferred
callbacks), no function above 7 %. Closing the gap needs less Python per SSH packet (a transport
that parses and frames its buffers in place), not a different SFTP layer.

The 32 s stall of a bare Conch server was not reproduced here (that server was not run); reading
its code, the likely cause is its write path: `twisted.conch.unix` writes each
32 KiB chunk with `os.write` on the reactor thread, and Conch's `SSHConnection` grants the client
window as soon as data arrives, before it is written. When the kernel throttles the writer (dirty
page write-back, here on a shared virtual disk) the reactor blocks inside `write`: no SSH packet is
read or answered, the client's TCP send queue fills and it falls back to zero-window probes with
exponential back-off, so a few seconds of blocked disk can become tens of seconds. This server
never writes on the reactor thread (a worker per batch), grants window only while the work
it holds stays under 4 MiB (`sftp/session.py`), and keeps reading and answering while the disk is
slow. No daemon run here was slower than 1.5x its median except one 512 MiB put (1.94x) during which
OpenSSH's next put was slowed likewise (7.2 s against 4.3 s): a disk stall that both servers saw.
"""

CIPHER = ["-c", "aes128-ctr", "-o", "MACs=hmac-sha2-256"]
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-q"]


class Sampler:
    """
    CPU seconds and peak RSS of a set of processes found by ``find``, sampled every 20 ms.
    """

    def __init__(self, find: Any) -> None:
        self._find = find
        self._last: dict[int, float] = {}
        self._first: dict[int, float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for process in self._find():
            try:
                times = process.cpu_times()
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            cpu = times.user + times.system
            self._first.setdefault(process.pid, cpu)
            self._last[process.pid] = cpu
            self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> "Sampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cpu(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


def start_sshd(processes: Processes, base: str, public_key: str) -> int:
    """
    ``sshd`` on a free loopback port serving ``sftp-server`` for this user's key only.
    """
    port = free_port()
    host_key = os.path.join(base, "sshd_host_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    keys = os.path.join(base, "authorized_keys")
    with open(keys, "w") as f:
        f.write(public_key)
    os.chmod(keys, 0o600)
    config = os.path.join(base, "sshd_config")
    with open(config, "w") as f:
        f.write("\n".join([
            "ListenAddress 127.0.0.1", "Port {}".format(port), "HostKey " + host_key,
            "AuthorizedKeysFile " + keys, "PasswordAuthentication no", "UsePAM no",
            "StrictModes no", "PermitRootLogin yes", "PidFile none",
            "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
    os.makedirs("/run/sshd", exist_ok=True)
    log_path = os.path.join(base, "sshd.log")
    processes.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", config], log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("sshd did not start: " + open(log_path).read())


def transfer(port: int, user: str, key: str, commands: str) -> float:
    """
    Run ``sftp`` with ``commands``; the wall time.
    """
    started = time.monotonic()
    result = subprocess.run(["sftp", *SSH_OPTIONS, *CIPHER, "-i", key, "-P", str(port),
                             "{}@127.0.0.1".format(user)], input=commands.encode(),
                            capture_output=True, timeout=600)
    elapsed = time.monotonic() - started
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError("sftp failed: {!r}".format(result.stderr[-500:]))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MIB
    processes = Processes()
    rows: list[list[Any]] = []
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    with data_file(size, keep=args.keep_data) as data, scratch("sftp") as base:
        key = os.path.join(base, "client_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        with open(key + ".pub") as f:
            public = f.read()
        sftp_port = free_port()
        users = {"bench": {"uuid": "1b7f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c", "id": 1,
                           "password": "bench", "public_keys": [public.strip()],
                           "permissions": {SERVER: ["*"]}}}
        system = {name: os.path.join(base, directory) for name, directory in (
            ("root_directory", "root"), ("log_directory", "log"), ("data", "data"),
            ("archive_directory", "archives"), ("backup_directory", "backups"),
            ("tmp_directory", "tmp"))}
        import pwd
        system.update({"user": {"uid": os.getuid(), "gid": os.getgid()},
                       "username": pwd.getpwuid(os.getuid()).pw_name,
                       "sftp": {"bind_address": "127.0.0.1", "bind_port": sftp_port}})
        try:
            daemon = Daemon(processes, base, users=users, config_overrides={"system": system})
            ssh_port = start_sshd(processes, base, public)
            openssh_dir = os.path.join(base, "openssh")
            os.makedirs(openssh_dir)
            targets = {
                "daemon": (sftp_port, "bench." + SERVER[:8], "/", lambda: [daemon.ps]),
                "openssh": (ssh_port, pwd.getpwuid(os.getuid()).pw_name, openssh_dir + "/",
                            lambda: _sshd_children(ssh_port)),
            }
            for run in range(args.runs):
                for direction in ("put", "get"):
                    order = ("daemon", "openssh") if run % 2 == 0 else ("openssh", "daemon")
                    for target in order:
                        port, user, remote, find = targets[target]
                        remote_file = remote + "bench.bin"
                        local = os.path.join(base, "got.bin")
                        if direction == "put":
                            commands = "put {} {}\n".format(data, remote_file)
                        else:
                            commands = "get {} {}\n".format(remote_file, local)
                        before = daemon.ps.memory_info().rss
                        with Sampler(find) as sampler:
                            elapsed = transfer(port, user, key, commands)
                        growth = (sampler.peak_rss - before) if target == "daemon" else 0
                        peak = sampler.peak_rss
                        cpu_per_gib = sampler.cpu / (size / GIB)
                        results.setdefault((target, direction), []).append(
                            (elapsed, cpu_per_gib, peak))
                        rows.append([run + 1, direction, target, "{:.2f}".format(elapsed),
                                     "{:.0f}".format(size / MIB / elapsed),
                                     "{:.2f}".format(cpu_per_gib),
                                     "{:.0f}".format(peak / MIB),
                                     "{:+.0f}".format(growth / MIB) if target == "daemon" else ""])
                        log("run {} {} {}: {:.2f} s, {:.0f} MiB/s, {:.2f} CPU s/GiB".format(
                            run + 1, direction, target, elapsed, size / MIB / elapsed,
                            cpu_per_gib))
                        if direction == "get":
                            os.unlink(local)
        finally:
            processes.stop_all()
    lines = write_results(args, size, rows, results)
    print("\n".join(lines))


def _sshd_children(port: int) -> list[psutil.Process]:
    """
    The per-connection ``sshd`` processes and ``sftp-server`` (children of the listening sshd).
    """
    found = []
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        if name == "sftp-server" or (name == "sshd" and process.ppid() != 1):
            found.append(process)
    return found


def write_results(args: Any, size: int, rows: list[list[Any]],
                  results: dict[tuple[str, str], list[tuple[float, float, int]]]) -> list[str]:
    import platform
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    load = os.getloadavg()
    lines = [
        "- Command: `{}`".format(this_command()),
        "- Machine: nproc {}, {}, kernel {}; {}; load average {:.1f} / {:.1f} / {:.1f} at the end "
        "(the machine is shared with other agents' builds: figures are noisy)".format(
            os.cpu_count(), model, platform.release(), ssh_version, *load),
        "- {} MiB file, page cache warm; client `sftp {}` with default buffer and requests; "
        "{} runs per target, order alternating".format(size // MIB, " ".join(CIPHER), args.runs),
        "",
    ]
    lines += table(["run", "direction", "server", "seconds", "MiB/s", "server CPU s/GiB",
                    "server peak RSS MiB", "daemon RSS growth MiB"], rows)
    lines += ["", "Medians:", ""]
    verdicts = []
    for direction in ("put", "get"):
        ours = results[("daemon", direction)]
        theirs = results[("openssh", direction)]
        ours_median = statistics.median(r[0] for r in ours)
        theirs_median = statistics.median(r[0] for r in theirs)
        ratio = theirs_median / ours_median
        slowest = max(r[0] for r in ours) / ours_median
        lines.append("- {}: daemon {:.0f} MiB/s, {:.2f} CPU s/GiB; OpenSSH {:.0f} MiB/s, {:.2f} CPU "
                     "s/GiB; throughput ratio **{:.2f}x** (target >= 0.8); slowest daemon run "
                     "{:.2f}x its median (target <= 1.5)".format(
                         direction, size / MIB / ours_median,
                         statistics.median(r[1] for r in ours), size / MIB / theirs_median,
                         statistics.median(r[1] for r in theirs), ratio, slowest))
        verdicts.append((direction, ratio >= 0.8, slowest <= 1.5))
    lines += ["", "Targets: " + "; ".join(
        "{} throughput {}, stalls {}".format(d, "met" if a else "MISSED", "none" if b else "FOUND")
        for d, a, b in verdicts)]
    lines += [""] + ANALYSIS.strip().split("\n")
    write_section("sftp", "SFTP: 1 GiB put and get vs OpenSSH sshd + sftp-server", lines)
    return lines


if __name__ == "__main__":
    main()
