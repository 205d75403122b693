"""
File manager routes at node scale:

(c) ``GET files/list-directory`` of a folder of 10,000 files (the MIME type of
    every file is sniffed): the first, cold request, then the p50 / p90 of the
    following ones — target p50 under 100 ms;
(d) a content search of a 1 GiB tree (one 512 MiB file of random bytes and
    20,000 small text files, a few of which hold the needle) with
    ``GET files/search?content=`` against ``grep -rlF`` over the same
    directory, page cache warm for both, runs alternating — the ratio is
    reported.

    .venv/bin/python bench/files.py [--runs N]

Writes the "files" section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (MIB, SERVER, TOKEN, Daemon, Meter, Processes, arguments,  # noqa: E402
                    header_lines, http_get, log, median, ratio, scratch, table, this_command,
                    verdict, write_section)

FILES_IN_FOLDER = 10000
SMALL_FILES = 20000
BIG_FILE = 512 * MIB
NEEDLE = b"needle-7c1e4b"
AUTH = {"Authorization": "Bearer " + TOKEN}
LIST_TARGET = 0.100


def make_listing_folder(volume: str) -> str:
    """
    10,000 files: mostly short text, some JSON, some binary.
    """
    folder = os.path.join(volume, "many")
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(7)
    for n in range(FILES_IN_FOLDER):
        kind = n % 10
        name = "file-{:05d}.{}".format(n, ("txt", "json", "bin")[min(kind, 2)])
        with open(os.path.join(folder, name), "wb") as f:
            if kind == 1:
                f.write(b'{"n": %d}' % n)
            elif kind >= 2 and kind < 4:
                f.write(rng.randbytes(200))
            else:
                f.write(b"line %d\n" % n * 5)
    return folder


def make_tree(volume: str) -> str:
    """
    The 1 GiB tree: 512 MiB of random bytes and 20,000 text files of about
    25 KiB in 100 directories; every 2,000th file holds ``NEEDLE``.
    """
    tree = os.path.join(volume, "tree")
    if os.path.isdir(tree):
        return tree
    os.makedirs(tree)
    with open(os.path.join(tree, "world.bin"), "wb") as f:
        for _ in range(BIG_FILE // MIB):
            f.write(os.urandom(MIB))
    rng = random.Random(11)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"server", b"player", b"config", b"value"]
    for n in range(SMALL_FILES):
        directory = os.path.join(tree, "d{:03d}".format(n % 100))
        os.makedirs(directory, exist_ok=True)
        line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
        body = line * (25 * 1024 // len(line))
        if n % 2000 == 0:
            body += NEEDLE + b"\n"
        with open(os.path.join(directory, "f{:05d}.txt".format(n)), "wb") as f:
            f.write(body)
    return tree


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = http_get(url, AUTH)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError("{} answered {}: {!r}".format(url, status, body[:200]))
    return elapsed, body


def run(runs: int, command: str) -> dict[str, bool]:
    with Processes() as processes, scratch("files") as base:
        daemon = Daemon(processes, base)
        files = daemon.url + "/api/servers/{}/files/".format(SERVER)
        log("creating {} files for the listing".format(FILES_IN_FOLDER))
        make_listing_folder(daemon.volume)
        cold, body = timed_get(files + "list-directory?directory=%2Fmany")
        import json
        assert len(json.loads(body)) == FILES_IN_FOLDER
        warm = [timed_get(files + "list-directory?directory=%2Fmany")[0] for _ in range(runs * 3)]
        warm.sort()
        p50, p90 = warm[len(warm) // 2], warm[int(len(warm) * 0.9)]
        log("creating the 1 GiB tree")
        tree = make_tree(daemon.volume)
        subprocess.run(["cat"] + [os.path.join(tree, "world.bin")], stdout=subprocess.DEVNULL)
        expected = SMALL_FILES // 2000
        daemon_times: list[float] = []
        grep_times: list[float] = []
        meter = Meter(daemon.processes())
        for index in range(runs * 2 + 2):
            if index % 2 == 0:
                with meter:
                    elapsed, body = timed_get(files + "search?content={}&directory=%2Ftree".format(
                        NEEDLE.decode()))
                found = len(json.loads(body))
                if found != expected:
                    raise RuntimeError("search found {} files, expected {}".format(found, expected))
                if index >= 2:
                    daemon_times.append(elapsed)
            else:
                started = time.perf_counter()
                result = subprocess.run(["grep", "-rlF", NEEDLE.decode(), tree],
                                        capture_output=True)
                elapsed = time.perf_counter() - started
                if len(result.stdout.splitlines()) != expected:
                    raise RuntimeError("grep found {}".format(result.stdout))
                if index >= 2:
                    grep_times.append(elapsed)
        search_ratio = ratio(median(daemon_times), median(grep_times))
        verdicts = {"list-directory of 10,000 files: p50 < 100 ms ({:.0f} ms)".format(p50 * 1000):
                    p50 < LIST_TARGET}
        body_lines = header_lines(command, runs) + [
            "- Listing: one folder of {:,} files (70 % text, 10 % JSON, 20 % binary); the first "
            "request sniffs every file, later ones hit the daemon's MIME cache (keyed by inode, "
            "size, mtime and ctime). Client: Python `urllib` on loopback, wall time of the whole "
            "response (about 2.6 MB of JSON).".format(FILES_IN_FOLDER),
            "- Search: `GET files/search?content=` vs `grep -rlF` over the same 1 GiB tree "
            "(512 MiB random + {:,} text files of ~25 KiB), page cache warm, alternating; the "
            "first run of each discarded.".format(SMALL_FILES),
            "",
        ] + table(["case", "figure"], [
            ["list-directory, cold (first request)", "{:.0f} ms".format(cold * 1000)],
            ["list-directory, p50 of {}".format(len(warm)), "**{:.0f} ms**".format(p50 * 1000)],
            ["list-directory, p90", "{:.0f} ms".format(p90 * 1000)],
            ["content search, daemon (median; runs)", "{:.2f} s ({})".format(
                median(daemon_times), ", ".join("{:.2f}".format(t) for t in daemon_times))],
            ["content search, grep -rlF (median; runs)", "{:.2f} s ({})".format(
                median(grep_times), ", ".join("{:.2f}".format(t) for t in grep_times))],
            ["**daemon / grep** (time)", "**{:.2f}×**".format(search_ratio)],
        ]) + ["", "Targets:", ""] + ["- {}: {}".format(k, verdict(v)) for k, v in verdicts.items()]
        write_section("files", "Files: listing 10,000 files, content search of a 1 GiB tree",
                      body_lines)
        return verdicts


def main() -> None:
    args = arguments(__doc__.strip().split("\n\n")[0], runs=5).parse_args()
    for name, ok in run(args.runs, this_command()).items():
        print("{}: {}".format("met   " if ok else "MISSED", name))


if __name__ == "__main__":
    main()
