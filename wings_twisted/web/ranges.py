"""
HTTP Range arithmetic and download validators for ``/download/file`` and
``/download/backup`` (downloads-uploads.md §3.2-§3.4 and §5).

Pure: header values and numbers in, decisions and header strings out; no
request objects, no Twisted, no clock reads.  The split follows
``twisted.web.static``: ``parse_range`` (syntax only) → ``select_range``
(resolution against the file size) → the producer, which lives elsewhere.
This module does **not** reuse ``static.File``'s range code: that one compares
the unit case-sensitively, ignores ``If-Range`` and answers several ranges with
``multipart/byteranges``, which this project never sends.

A download resource makes the whole decision of §5.1 (steps 2-7) with one
call, after token checks and resolution succeeded::

    selection = evaluate_range(
        request.method,
        request.requestHeaders.getRawHeaders(b"range"),
        request.getHeader(b"if-range"),
        size=st.st_size, etag=etag_for(st), last_modified=int(st.st_mtime),
        now=reactor.seconds())
    # None → 200 full; (offset, length) → 206; RangeNotSatisfiable → 416

The order matters: a failing ``If-Range`` turns even an unsatisfiable
``Range`` into a 200, and several ``Range`` lines are a 200 whatever
``If-Range`` says.  ``select_range`` is the same decision without the method
and ``If-Range`` steps.
"""

from __future__ import annotations

import calendar
import math
import os
import re
from datetime import datetime, timezone
from typing import Sequence

__all__ = [
    "MAX_RANGE_SPECS",
    "RangeNotSatisfiable",
    "parse_range",
    "select_range",
    "evaluate_range",
    "if_range_allows",
    "etag_for",
    "http_date",
    "content_disposition",
    "content_range",
]

#: More range-specs than this → the header is ignored (§5.1 step 6).
MAX_RANGE_SPECS = 32

#: Positions with more significant digits than this are clamped to
#: ``10 ** _MAX_DIGITS``.  Any real file is far smaller (sizes are below
#: 2**63), so the clamp never changes a decision, and it keeps ``int()``
#: below Python's limit on converting long digit strings.
_MAX_DIGITS = 1000

_WS = " \t"
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")


class RangeNotSatisfiable(Exception):
    """
    The ``Range`` header is valid but selects nothing of a ``size``-byte
    file: answer 416 with ``Content-Range: bytes */<size>`` (§5.6).
    """

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size

    @property
    def content_range(self) -> str:
        """
        The ``Content-Range`` value of the 416 answer.
        """
        return "bytes */%d" % (self.size,)


def _position(digits: str) -> tuple[tuple[int, str], int]:
    """
    Convert a run of ASCII digits to ``(sort key, value)``.

    The sort key orders arbitrarily long numbers exactly; the value is
    clamped (see ``_MAX_DIGITS``).
    """
    significant = digits.lstrip("0") or "0"
    key = (len(significant), significant)
    if len(significant) > _MAX_DIGITS:
        return key, 10 ** _MAX_DIGITS
    return key, int(significant)


def parse_range(value: bytes | str) -> list[tuple[int | None, int | None]] | None:
    """
    Parse a ``Range`` field value (syntax of §5.2, no size involved).

    Returns one tuple per range-spec, in order:

    * ``a-b`` → ``(a, b)``;
    * ``a-``  → ``(a, None)``;
    * ``-s``  → ``(None, s)`` (a suffix of ``s`` bytes).

    Returns ``None`` when the header must be ignored: a unit other than
    ``bytes`` (any case), a syntax error anywhere (whitespace inside a spec or
    before ``=``, signs, hex, ``-`` alone, ``1-2-3``, ``a-b`` with ``a > b``),
    no range-spec at all, or more than ``MAX_RANGE_SPECS`` specs.  Empty list
    elements are skipped; SP/HTAB are allowed around the whole value, after
    ``=`` and around commas.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    unit, sep, range_set = value.strip(_WS).partition("=")
    if not sep or not unit.isascii() or unit.lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for element in range_set.split(","):
        element = element.strip(_WS)
        if not element:
            continue
        if len(specs) == MAX_RANGE_SPECS:
            return None
        match = _INT_RANGE.fullmatch(element)
        if match is not None:
            first_key, first = _position(match.group(1))
            if not match.group(2):
                specs.append((first, None))
                continue
            last_key, last = _position(match.group(2))
            if last_key < first_key:
                return None
            specs.append((first, last))
            continue
        match = _SUFFIX_RANGE.fullmatch(element)
        if match is None:
            return None
        specs.append((None, _position(match.group(1))[1]))
    return specs or None


def _resolve(spec: tuple[int | None, int | None], size: int) -> tuple[int, int] | None:
    """
    Resolve one parsed spec against ``size`` (§5.3): inclusive
    ``(first, last)``, or ``None`` when unsatisfiable.
    """
    first, last = spec
    if first is None:
        assert last is not None
        if last <= 0 or size <= 0:
            return None
        return max(size - last, 0), size - 1
    if first >= size:
        return None
    if last is None:
        return first, size - 1
    return first, min(last, size - 1)


def select_range(header_values: Sequence[bytes] | None, size: int) -> tuple[int, int] | None:
    """
    Decide a download GET's answer from its raw ``Range`` header lines.

    Covers §5.1 steps 3, 5, 6 and 7 (``If-Range``, step 4, is the caller's,
    see the module docstring).

    :param header_values: every ``Range`` line as received
        (``getRawHeaders(b"range")``), or ``None``.
    :param size: the file size ``N`` from ``fstat``.
    :return: ``None`` for the full 200 (no header, several lines, invalid,
        more than 32 specs, or two or more satisfiable specs), else
        ``(offset, length)`` of the single 206 part, with ``length >= 1``.
    :raises RangeNotSatisfiable: 416, nothing satisfiable (any ``Range`` on
        an empty file included).
    """
    if not header_values or len(header_values) != 1:
        return None
    specs = parse_range(header_values[0])
    if specs is None:
        return None
    satisfiable = [r for r in (_resolve(spec, size) for spec in specs) if r is not None]
    if not satisfiable:
        raise RangeNotSatisfiable(size)
    if len(satisfiable) > 1:
        return None
    first, last = satisfiable[0]
    return first, last - first + 1


def evaluate_range(method: bytes, range_lines: Sequence[bytes] | None,
                   if_range: bytes | str | None, *, size: int, etag: str,
                   last_modified: int, now: float) -> tuple[int, int] | None:
    """
    The complete Range decision of §5.1 steps 2-7 for a download request.

    :param method: the request method; anything but ``GET`` (HEAD) ignores
        ``Range`` and ``If-Range``.
    :param range_lines: every ``Range`` line (``getRawHeaders(b"range")``).
    :param if_range: the ``If-Range`` value, ``None`` when absent.
    :return: and raises as ``select_range``.
    """
    if method != b"GET" or not range_lines or len(range_lines) != 1:
        return None
    if not if_range_allows(if_range, etag=etag, last_modified=last_modified, now=now):
        return None
    return select_range(range_lines, size)


# ---------------------------------------------------------------------------
# HTTP dates and validators
# ---------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY = "(?:" + "|".join(_DAYS) + ")"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# HTTP-date is case-sensitive (RFC 9110 §5.6.7); no leniency beyond the
# three grammars.
_IMF_FIXDATE = re.compile(_DAY + ", ([0-9]{2}) " + _MONTH + " ([0-9]{4}) " + _TIME + " GMT")
_RFC850 = re.compile("(?:" + "|".join(_LONG_DAYS) + "), ([0-9]{2})-" + _MONTH
                     + "-([0-9]{2}) " + _TIME + " GMT")
_ASCTIME = re.compile(_DAY + " " + _MONTH + " ([0-9]{2}| [0-9]) " + _TIME + " ([0-9]{4})")


def _timestamp(year: int, month: str, day: int, hh: int, mm: int, ss: int) -> int | None:
    """
    Seconds since the epoch for a broken-down UTC time, ``None`` if invalid.
    """
    try:
        moment = datetime(year, _MONTHS.index(month) + 1, day, hh, mm, ss)
    except ValueError:
        return None
    return calendar.timegm(moment.timetuple())


def _parse_http_date(value: str, now: float) -> int | None:
    """
    Parse an HTTP-date in any of the three forms of RFC 9110 §5.6.7.

    A two-digit RFC 850 year more than 50 years ahead of ``now`` is taken as
    the most recent past year with those digits (RFC 9110 §5.6.7).
    """
    match = _IMF_FIXDATE.fullmatch(value)
    if match is not None:
        day, month, year, hh, mm, ss = match.groups()
        return _timestamp(int(year), month, int(day), int(hh), int(mm), int(ss))
    match = _RFC850.fullmatch(value)
    if match is not None:
        day, month, yy, hh, mm, ss = match.groups()
        this_year = datetime.fromtimestamp(math.floor(now), tz=timezone.utc).year
        year = this_year - this_year % 100 + int(yy)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, month, int(day), int(hh), int(mm), int(ss))
    match = _ASCTIME.fullmatch(value)
    if match is not None:
        month, day, hh, mm, ss, year = match.groups()
        return _timestamp(int(year), month, int(day.strip()), int(hh), int(mm), int(ss))
    return None


def if_range_allows(value: bytes | str | None, *, etag: str, last_modified: int,
                    now: float) -> bool:
    """
    Evaluate ``If-Range`` (§5.8); ``True`` lets the ``Range`` apply.

    * ``None`` (no ``If-Range``) → ``True``.
    * An entity-tag (starts with ``"`` or ``W/"``) → ``True`` only if strong
      and character-for-character equal to ``etag``.
    * Otherwise an HTTP-date (IMF-fixdate, RFC 850 or asctime) → ``True`` only
      if it equals ``last_modified`` and ``last_modified <= floor(now) - 1``
      (a modification within the response's second is not a strong
      validator).
    * Anything unparsable → ``False``.

    :param etag: the current ``ETag`` value, quotes included (``etag_for``).
    :param last_modified: ``st_mtime`` truncated to whole seconds.
    :param now: the time used for the response's ``Date``.
    """
    if value is None:
        return True
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip(_WS)
    if value.startswith('W/"'):
        return False
    if value.startswith('"'):
        return value == etag
    date = _parse_http_date(value, now)
    return date is not None and date == last_modified and last_modified <= math.floor(now) - 1


def etag_for(st: os.stat_result) -> str:
    """
    The strong ETag of a file (§3.4): ``"<ino hex>-<size hex>-<mtime_ns hex>"``.
    """
    return '"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)


def http_date(seconds: float) -> str:
    """
    Format a time as an IMF-fixdate (``Sun, 17 Mar 2024 14:58:30 GMT``),
    truncated to the whole second below (locale-independent).
    """
    moment = datetime.fromtimestamp(math.floor(seconds), tz=timezone.utc)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[moment.weekday()], moment.day, _MONTHS[moment.month - 1], moment.year,
        moment.hour, moment.minute, moment.second)


# ---------------------------------------------------------------------------
# Content-Disposition and Content-Range
# ---------------------------------------------------------------------------

# RFC 8187 attr-char minus ALPHA / DIGIT.
_ATTR_PUNCT = frozenset("!#$&+-.^_`|~")


def _decoded_name(name: str | bytes) -> str:
    """
    The file name as text, every invalid UTF-8 sequence replaced by U+FFFD.

    A ``str`` coming from ``os.fsdecode`` may hold lone surrogates standing
    for undecodable bytes; they are turned back into those bytes first so
    that each bad byte becomes one U+FFFD, exactly as for a ``bytes`` name.
    """
    if isinstance(name, str):
        try:
            return name.encode("utf-8").decode("utf-8")
        except UnicodeEncodeError:
            try:
                raw = name.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = name.encode("utf-8", "surrogatepass")
    else:
        raw = name
    return raw.decode("utf-8", "replace")


def content_disposition(name: str | bytes) -> str:
    """
    The ``Content-Disposition`` value for a download named ``name`` (§3.3).

    ``attachment; filename="<fallback>"``, where the fallback keeps printable
    ASCII, backslash-escapes ``"`` and ``\\`` and replaces every other
    character with ``_``; ``; filename*=UTF-8''<percent-encoded>`` is appended
    only if something was replaced.  The result is pure ASCII.
    """
    text = _decoded_name(name)
    fallback: list[str] = []
    replaced = False
    for char in text:
        if char in '"\\':
            fallback.append("\\" + char)
        elif " " <= char <= "~":
            fallback.append(char)
        else:
            fallback.append("_")
            replaced = True
    header = 'attachment; filename="%s"' % ("".join(fallback),)
    if replaced:
        encoded = "".join(
            chr(byte) if (chr(byte).isascii() and chr(byte).isalnum()) or chr(byte) in _ATTR_PUNCT
            else "%%%02X" % (byte,)
            for byte in text.encode("utf-8"))
        header += "; filename*=UTF-8''" + encoded
    return header


def content_range(offset: int, length: int, size: int) -> str:
    """
    The ``Content-Range`` value of a 206 part: ``bytes <first>-<last>/<size>``.

    :raises ValueError: the part is empty or does not lie inside the file.
    """
    if offset < 0 or length < 1 or offset + length > size:
        raise ValueError("range %d+%d outside a %d-byte file" % (offset, length, size))
    return "bytes %d-%d/%d" % (offset, offset + length - 1, size)
