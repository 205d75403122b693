"""
The server side of the console pipeline (lifecycle.md §14, §15;
websocket.md §10), shared by every environment.  Splitting raw output into
lines is the environment's job (``environment.lines``).

* ``strip_ansi`` removes CSI/OSC escape sequences (introduced by ESC or by
  the C1 control U+009B).
* ``DoneMatcher`` applies ``startup.done`` (substring, or ``regex:`` with a
  fallback to the literal text when the pattern does not compile).
* ``ConsoleThrottle`` is the per-server fixed-window line limiter of the
  ``throttles`` configuration.
* ``daemon_line`` frames a daemon-origin console line.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Iterable, Sequence

from twisted.logger import Logger

log = Logger()

THROTTLE_NOTICE = "Server is outputting console data too quickly -- throttling..."

_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"            # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"          # OSC ... BEL or ST
    r"|\x1b[@-Z\\-_]"                               # other two-byte escapes
)


def strip_ansi(text: str) -> str:
    """
    ``text`` without ANSI escape sequences.
    """
    return _ANSI.sub("", text)


def daemon_line(app_name: str, text: str) -> str:
    """
    A daemon-origin console line (websocket.md §6.4).
    """
    return "\x1b[33m\x1b[1m[{} Daemon]:\x1b[39m {}\x1b[0m".format(app_name, text)


def _regex_check(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda line: pattern.search(line) is not None


def _substring_check(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


class DoneMatcher:
    """
    Decide whether a console line marks the server as running (§4).
    """

    def __init__(self, done: Iterable[str], *, strip: bool = False) -> None:
        self.strip = strip
        self._checks: list[Callable[[str], bool]] = []
        for entry in done:
            entry = str(entry)
            if entry.startswith("regex:") and len(entry) > 6:
                try:
                    pattern = re.compile(entry[6:])
                except re.error as e:
                    log.warn("Done-string {entry!r} is not a valid expression ({error}); "
                             "matching it literally", entry=entry, error=str(e))
                else:
                    self._checks.append(_regex_check(pattern))
                    continue
            if entry:
                self._checks.append(_substring_check(entry))

    def __bool__(self) -> bool:
        return bool(self._checks)

    def matches(self, line: str) -> bool:
        """
        True when ``line`` satisfies any done entry.
        """
        if not self._checks:
            return False
        if self.strip:
            line = strip_ansi(line)
        return any(check(line) for check in self._checks)


class ConsoleThrottle:
    """
    At most ``lines`` lines per window of ``interval`` seconds (websocket.md
    §10).  ``allow()`` says whether a line may be forwarded; ``notice`` is
    true exactly for the first refused line of an episode.
    """

    def __init__(self, clock: Callable[[], float], *, enabled: bool, lines: int,
                 interval: float) -> None:
        self._clock = clock
        self.enabled = enabled and lines > 0 and interval > 0
        self.lines = lines
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        """
        Start afresh (the server entered ``starting``).
        """
        self._window = float("-inf")
        self._count = 0
        self.throttling = False
        self.dropped = 0

    def allow(self) -> tuple[bool, bool]:
        """
        ``(forward, notice)`` for one more line.
        """
        if not self.enabled:
            return True, False
        now = self._clock()
        if now - self._window > self.interval:
            self._window = now
            self._count = 0
        self._count += 1
        if self._count <= self.lines:
            self.throttling = False
            return True, False
        self.dropped += 1
        if self.throttling:
            return False, False
        self.throttling = True
        return False, True


def environment_variables(timezone: str, invocation: str, memory_limit: int,
                          ip: str, port: int | str,
                          extra: Sequence[tuple[str, object]]) -> list[tuple[str, str]]:
    """
    The process environment of lifecycle.md §2.3, in order, later
    duplicates (case-insensitive) skipped; values converted to text.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(name: str, value: object) -> None:
        key = name.upper()
        if key in seen:
            return
        seen.add(key)
        out.append((key, env_value(value)))

    add("TZ", timezone)
    add("STARTUP", invocation)
    add("SERVER_MEMORY", memory_limit)
    add("SERVER_IP", ip)
    add("SERVER_PORT", port)
    for name, value in extra:
        add(str(name), value)
    return out


def env_value(value: object) -> str:
    """
    A settings value as an environment string: integral numbers without
    decimals, other numbers with ``repr``, booleans ``true``/``false``,
    ``null`` empty (lifecycle.md §2.3, the project's deviation).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
