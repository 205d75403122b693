"""
All benchmarks in one go (what ``make bench`` runs): downloads, uploads,
concurrency, sharing one 1 GiB test file, then a summary of the targets in
``bench/RESULTS.md``.

    .venv/bin/python bench/run.py [--keep-data] [--no-profile] [--only downloads,uploads,concurrency]

Takes two to four minutes on two cores.  Every process it starts is stopped and
every scratch file removed when it ends, errors included (the test file stays
with ``--keep-data``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import concurrency  # noqa: E402
import downloads  # noqa: E402
import uploads  # noqa: E402
from common import data_file, header_lines, log, this_command, verdict, write_section  # noqa: E402

BENCHMARKS = {
    "downloads": (downloads.run, 15),
    "uploads": (uploads.run, 11),
    "concurrency": (concurrency.run, 15),
}


def main() -> None:
    """
    Run the selected benchmarks and write the summary.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--keep-data", action="store_true",
                        help="keep bench/out/data/random-1GiB.bin for the next invocation")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy runs done when a target is missed")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated subset of: %(default)s")
    args = parser.parse_args()
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser.error("unknown benchmark(s): " + ", ".join(unknown))
    command = this_command()
    started = time.monotonic()
    verdicts: dict[str, dict[str, bool]] = {}
    with data_file(keep=args.keep_data) as data:
        for name in selected:
            function, runs = BENCHMARKS[name]
            log("== {} ({} runs per target)".format(name, runs))
            verdicts[name] = function(data, runs, command, profile=not args.no_profile)
    minutes = (time.monotonic() - started) / 60
    body = header_lines(command, 0)[:3]
    body.append("- Wall time of the whole run: {:.1f} min".format(minutes))
    body += ["", "| Benchmark | Target | Result |", "|---|---|---|"]
    for name, results in verdicts.items():
        for target, ok in results.items():
            body.append("| {} | {} | {} |".format(name, target, verdict(ok)))
    write_section("summary", "Summary of the targets (last `bench/run.py`)", body)
    for name, results in verdicts.items():
        for target, ok in results.items():
            print("{} {}: {}".format("met   " if ok else "MISSED", name, target))
    log("done in {:.1f} min".format(minutes))


if __name__ == "__main__":
    main()
