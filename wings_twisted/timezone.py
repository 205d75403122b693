"""
``system.timezone`` settled at boot (config.md §4.1), as upstream does it.

When the file leaves it empty it is detected: the ``TZ`` environment
variable, else ``/etc/timezone``, else the ``Time zone:`` line of
``timedatectl``, else ``UTC``.  The value (configured or detected) is then
stripped of every character other than ASCII letters, ``_`` and ``/`` (so
``Etc/GMT+2`` becomes ``Etc/GMT``, upstream's quirk) and must name a zone of
the system's zone database, or start-up fails with one line.  The zone is
given to servers (``TZ``) and the schedulers of later issues.
"""

from __future__ import annotations

import os
import re
import subprocess
import zoneinfo
from dataclasses import dataclass
from typing import Callable, Mapping

from .config import Config, replace_values

_UNWANTED = re.compile(r"[^A-Za-z_/]")


class TimezoneError(Exception):
    """
    The configured or detected zone is not a valid IANA zone.
    """


def _timedatectl() -> str:
    try:
        result = subprocess.run(["timedatectl"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _valid(zone: str) -> bool:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Sources:
    """
    Where a zone can come from (injected in tests).
    """

    read: Callable[[str], str] = _read
    timedatectl: Callable[[], str] = _timedatectl
    valid: Callable[[str], bool] = _valid


def detect_timezone(environ: Mapping[str, str], sources: Sources) -> str:
    """
    The host's zone by upstream's order of sources.
    """
    if environ.get("TZ"):
        return environ["TZ"]
    try:
        zone = sources.read("/etc/timezone").strip()
    except OSError:
        zone = ""
    if zone:
        return zone
    for line in sources.timedatectl().splitlines():
        label, _, value = line.partition(":")
        if label.strip() == "Time zone" and value.strip():
            return value.strip().split()[0]
    return "UTC"


def resolve_timezone(config: Config, *, environ: Mapping[str, str] | None = None,
                     sources: Sources | None = None) -> Config:
    """
    ``config`` with ``system.timezone`` detected when empty, cleaned and
    validated.

    :raises TimezoneError: not a zone of the system's database.
    """
    sources = sources or Sources()
    environ = os.environ if environ is None else environ
    zone = config.system.timezone or detect_timezone(environ, sources)
    cleaned = _UNWANTED.sub("", zone)
    if not cleaned or not sources.valid(cleaned):
        raise TimezoneError("system.timezone: {!r} is not a valid time zone".format(zone))
    return replace_values(config, {"system.timezone": cleaned})
