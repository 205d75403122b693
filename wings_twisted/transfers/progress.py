"""
The ``transfer logs`` lines of the source (transfers.md §6.2), formatted exactly::

    ESC[33m ESC[1m <RFC 1123 time> " [Transfer System] [Source Node]:" ESC[39m " " <message> ESC[0m

The time is the daemon's local time with its zone abbreviation (Go's ``time.RFC1123``:
``Sun, 17 Mar 2024 14:58:30 UTC``), with English day and month names whatever the locale.  The
progress message is ``Uploading [=====     ] 1.2 GiB / 3.4 GiB`` (25 cells).  Pure: no Twisted.
"""

from __future__ import annotations

import time

__all__ = ["PREPARING", "STREAMING", "FINISHED", "NO_ARCHIVE", "CANCELED", "human_bytes",
           "log_line", "progress_bar", "rfc1123"]

PREPARING = "Preparing to stream server data to destination..."
STREAMING = "Streaming archive to destination..."
FINISHED = "Finished streaming archive to destination."
NO_ARCHIVE = "Failed to get archive for transfer."
CANCELED = "Canceled."

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNITS = "KMGTPE"
BAR_WIDTH = 25


def rfc1123(seconds: float) -> str:
    """
    ``seconds`` as Go's ``time.RFC1123`` in the process's local time zone.
    """
    t = time.localtime(seconds)
    return "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} {}".format(
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min,
        t.tm_sec, t.tm_zone or "UTC")


def log_line(seconds: float, message: str) -> str:
    """
    One ``transfer logs`` argument.
    """
    return "\x1b[33m\x1b[1m{} [Transfer System] [Source Node]:\x1b[39m {}\x1b[0m".format(
        rfc1123(seconds), message)


def human_bytes(count: int) -> str:
    """
    ``812 B`` below 1024, else one decimal and a binary unit (``1.5 KiB``, ``3.2 GiB``).
    """
    if count < 1024:
        return "{} B".format(count)
    value = float(count)
    unit = -1
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return "{:.1f} {}iB".format(value, _UNITS[unit])


def progress_bar(written: int, total: int) -> str:
    """
    ``Uploading [===   ...] <written> / <total>``: ⌊25 × written / total⌋ cells, clamped to 0–25
    (0 when the total is 0).
    """
    cells = 0 if total <= 0 else max(0, min(BAR_WIDTH, BAR_WIDTH * written // total))
    return "Uploading [{}{}] {} / {}".format("=" * cells, " " * (BAR_WIDTH - cells),
                                             human_bytes(written), human_bytes(total))
