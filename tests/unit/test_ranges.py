"""
Tests for ``wings_twisted.web.ranges``: the Range contract of
downloads-uploads.md §5 (every worked example of §5.9 is its own test),
``If-Range`` (§5.8), the validators (§3.4) and ``Content-Disposition`` (§3.3).
"""

from __future__ import annotations

import os
from typing import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.web.ranges import (
    MAX_RANGE_SPECS,
    RangeNotSatisfiable,
    content_disposition,
    content_range,
    etag_for,
    evaluate_range,
    http_date,
    if_range_allows,
    parse_range,
    select_range,
)

# A file of N = 1000 bytes, last modified long before "now".
N = 1000
ETAG = '"1a2b3-3e8-17bd8a3c1e9a4b00"'
LAST_MODIFIED = 1710687510  # Sun, 17 Mar 2024 14:58:30 GMT
LAST_MODIFIED_TEXT = "Sun, 17 Mar 2024 14:58:30 GMT"
NOW = LAST_MODIFIED + 3600.25


def _outcome(method: bytes, range_lines: list[bytes] | None, if_range: bytes | None,
             size: int) -> tuple[object, ...]:
    """
    Run the whole §5.1 decision and describe it as the §5.9 table does:
    ``(200,)``, ``(206, offset, length, Content-Range)`` or
    ``(416, Content-Range)``.
    """
    try:
        selection = evaluate_range(method, range_lines, if_range, size=size, etag=ETAG,
                                   last_modified=LAST_MODIFIED, now=NOW)
    except RangeNotSatisfiable as exc:
        return (416, exc.content_range)
    if selection is None:
        return (200,)
    offset, length = selection
    return (206, offset, length, content_range(offset, length, size))


def _specs(count: int, last: str) -> bytes:
    """
    ``count - 1`` unsatisfiable specs followed by ``last``.
    """
    return ("bytes=" + ",".join(["5000-6000"] * (count - 1) + [last])).encode("ascii")


# (name, method, Range lines, If-Range, size, expected outcome); one row of
# downloads-uploads.md §5.9 per entry (rows listing several headers are split).
_EXAMPLES: list[tuple[str, bytes, list[bytes] | None, bytes | None, int, tuple[object, ...]]] = [
    ("first_500", b"GET", [b"bytes=0-499"], None, N, (206, 0, 500, "bytes 0-499/1000")),
    ("open_500", b"GET", [b"bytes=500-"], None, N, (206, 500, 500, "bytes 500-999/1000")),
    ("suffix_200", b"GET", [b"bytes=-200"], None, N, (206, 800, 200, "bytes 800-999/1000")),
    ("suffix_longer_than_file", b"GET", [b"bytes=-5000"], None, N,
     (206, 0, 1000, "bytes 0-999/1000")),
    ("first_byte", b"GET", [b"bytes=0-0"], None, N, (206, 0, 1, "bytes 0-0/1000")),
    ("last_clamped", b"GET", [b"bytes=999-5000"], None, N, (206, 999, 1, "bytes 999-999/1000")),
    ("zero_open", b"GET", [b"bytes=0-"], None, N, (206, 0, 1000, "bytes 0-999/1000")),
    ("unit_upper_case", b"GET", [b"BYTES=0-9"], None, N, (206, 0, 10, "bytes 0-9/1000")),
    ("space_after_equals", b"GET", [b"bytes= 0-9"], None, N, (206, 0, 10, "bytes 0-9/1000")),
    ("space_before_equals", b"GET", [b"bytes =0-9"], None, N, (200,)),
    ("start_at_size", b"GET", [b"bytes=1000-"], None, N, (416, "bytes */1000")),
    ("suffix_zero", b"GET", [b"bytes=-0"], None, N, (416, "bytes */1000")),
    ("all_beyond_end", b"GET", [b"bytes=5000-6000,7000-"], None, N, (416, "bytes */1000")),
    ("last_before_first", b"GET", [b"bytes=5-3"], None, N, (200,)),
    ("not_digits", b"GET", [b"bytes=abc"], None, N, (200,)),
    ("dash_alone", b"GET", [b"bytes=-"], None, N, (200,)),
    ("empty_set", b"GET", [b"bytes="], None, N, (200,)),
    ("three_positions", b"GET", [b"bytes=1-2-3"], None, N, (200,)),
    ("unknown_unit", b"GET", [b"items=0-5"], None, N, (200,)),
    ("unsatisfiable_dropped", b"GET", [b"bytes=0-9,2000-3000"], None, N,
     (206, 0, 10, "bytes 0-9/1000")),
    ("two_satisfiable", b"GET", [b"bytes=0-9, 20-29"], None, N, (200,)),
    ("overlap_not_coalesced", b"GET", [b"bytes=0-9,5-20"], None, N, (200,)),
    ("thirty_three_specs", b"GET", [_specs(33, "0-9")], None, N, (200,)),
    ("if_range_current_etag", b"GET", [b"bytes=0-9"], ETAG.encode(), N,
     (206, 0, 10, "bytes 0-9/1000")),
    ("if_range_weak_etag", b"GET", [b"bytes=0-9"], b"W/" + ETAG.encode(), N, (200,)),
    ("if_range_other_date", b"GET", [b"bytes=0-9"], b"Sun, 17 Mar 2024 14:58:31 GMT", N,
     (200,)),
    ("empty_file_open", b"GET", [b"bytes=0-"], None, 0, (416, "bytes */0")),
    ("empty_file_suffix", b"GET", [b"bytes=-5"], None, 0, (416, "bytes */0")),
    ("empty_file_no_range", b"GET", None, None, 0, (200,)),
    ("head_ignores_range", b"HEAD", [b"bytes=0-9"], None, N, (200,)),
]


class WorkedExamplesTests(SynchronousTestCase):
    """
    Every row of downloads-uploads.md §5.9, one generated test per row
    (``test_row_<name>``), so a failing row names itself.
    """


def _make_row_test(method: bytes, lines: list[bytes] | None, if_range: bytes | None,
                   size: int, expected: tuple[object, ...]) -> Callable[[SynchronousTestCase], None]:
    """
    Build the test method for one §5.9 row.
    """

    def test(self: SynchronousTestCase) -> None:
        self.assertEqual(_outcome(method, lines, if_range, size), expected)

    return test


for _name, _method, _lines, _if_range, _size, _expected in _EXAMPLES:
    _test = _make_row_test(_method, _lines, _if_range, _size, _expected)
    _test.__name__ = "test_row_" + _name
    _test.__doc__ = (
        "\n        §5.9: {method} with Range {lines!r}, If-Range {if_range!r}, N = {size}"
        " gives {expected!r}.\n        ".format(
            method=_method.decode(), lines=_lines, if_range=_if_range, size=_size,
            expected=_expected))
    setattr(WorkedExamplesTests, _test.__name__, _test)
del _name, _method, _lines, _if_range, _size, _expected, _test


class ParseRangeTests(SynchronousTestCase):
    """
    Syntax of the ``Range`` field (downloads-uploads.md §5.2).
    """

    def test_spec_shapes(self) -> None:
        """
        ``a-b``, ``a-`` and ``-s`` parse to ``(a, b)``, ``(a, None)`` and
        ``(None, s)``, in order.
        """
        self.assertEqual(parse_range(b"bytes=1-2,3-,-4"), [(1, 2), (3, None), (None, 4)])

    def test_str_and_bytes(self) -> None:
        """
        A ``str`` value parses exactly like the same ``bytes``.
        """
        self.assertEqual(parse_range("bytes=0-9"), parse_range(b"bytes=0-9"))

    def test_unit_any_case(self) -> None:
        """
        The unit ``bytes`` is compared case-insensitively.
        """
        for unit in (b"Bytes", b"bYtEs", b"BYTES"):
            self.assertEqual(parse_range(unit + b"=0-9"), [(0, 9)], unit)

    def test_unit_must_be_bytes(self) -> None:
        """
        Any other unit, an empty one, or a missing ``=`` is refused.
        """
        for value in (b"items=0-5", b"=0-9", b"bytes", b"bytes0-9", b"by tes=0-9",
                      b"byte=0-9", b"bytesx=0-9", b"\xe9bytes=0-9"):
            self.assertIsNone(parse_range(value), value)

    def test_outer_whitespace(self) -> None:
        """
        SP/HTAB around the whole value is ignored.
        """
        self.assertEqual(parse_range(b" \tbytes=0-9 \t"), [(0, 9)])

    def test_whitespace_after_equals_and_around_commas(self) -> None:
        """
        Optional whitespace is allowed after ``=`` and on both sides of commas.
        """
        self.assertEqual(parse_range(b"bytes=\t 0-9 ,\t20-29"), [(0, 9), (20, 29)])

    def test_whitespace_before_equals(self) -> None:
        """
        Whitespace between the unit and ``=`` is a syntax error.
        """
        self.assertIsNone(parse_range(b"bytes =0-9"))
        self.assertIsNone(parse_range(b"bytes\t=0-9"))

    def test_whitespace_inside_spec(self) -> None:
        """
        Whitespace inside a range-spec is a syntax error.
        """
        for value in (b"bytes=0 -9", b"bytes=0- 9", b"bytes=- 5", b"bytes=1 0-20",
                      b"bytes=0-9 20-29"):
            self.assertIsNone(parse_range(value), value)

    def test_other_whitespace_not_allowed(self) -> None:
        """
        Only SP and HTAB count as whitespace; a vertical tab or NBSP is an error.
        """
        self.assertIsNone(parse_range(b"bytes=\x0b0-9"))
        self.assertIsNone(parse_range(b"bytes=\xa00-9"))

    def test_empty_elements_skipped(self) -> None:
        """
        Empty list elements are skipped wherever they appear.
        """
        self.assertEqual(parse_range(b"bytes=0-9,,20-29"), [(0, 9), (20, 29)])
        self.assertEqual(parse_range(b"bytes=0-9,"), [(0, 9)])
        self.assertEqual(parse_range(b"bytes=, ,0-9"), [(0, 9)])

    def test_no_spec_left(self) -> None:
        """
        A set made only of empty elements is invalid.
        """
        for value in (b"bytes=", b"bytes=,", b"bytes= , ,\t", b"bytes=   "):
            self.assertIsNone(parse_range(value), value)

    def test_huge_positions(self) -> None:
        """
        Digit strings far beyond any integer width parse without error.
        """
        huge = b"9" * 5000
        self.assertIsNotNone(parse_range(b"bytes=" + huge + b"-"))
        self.assertIsNotNone(parse_range(b"bytes=0-" + huge))
        self.assertIsNotNone(parse_range(b"bytes=-" + huge))
        self.assertIsNotNone(parse_range(b"bytes=" + huge + b"-" + huge))

    def test_huge_positions_compared_exactly(self) -> None:
        """
        ``a-b`` with ``a > b`` is invalid even when both have thousands of digits.
        """
        self.assertIsNone(parse_range(b"bytes=" + b"9" * 5000 + b"-" + b"9" * 4999))
        self.assertIsNone(parse_range(b"bytes=1" + b"0" * 5000 + b"-" + b"9" * 5000))

    def test_leading_zeros(self) -> None:
        """
        Leading zeros are allowed and do not change the value, even in bulk.
        """
        self.assertEqual(parse_range(b"bytes=0005-0009"), [(5, 9)])
        self.assertEqual(parse_range(b"bytes=" + b"0" * 5000 + b"5-9"), [(5, 9)])

    def test_signs_and_decimals(self) -> None:
        """
        Signs, decimal points and exponents are syntax errors.
        """
        for value in (b"bytes=+5-9", b"bytes=5-+9", b"bytes=-+5", b"bytes=--5",
                      b"bytes=5--9", b"bytes=1.5-2", b"bytes=1-2.0", b"bytes=1e3-"):
            self.assertIsNone(parse_range(value), value)

    def test_hex(self) -> None:
        """
        Hexadecimal positions are syntax errors.
        """
        for value in (b"bytes=0x10-0x20", b"bytes=a-f", b"bytes=0-1f", b"bytes=-ff"):
            self.assertIsNone(parse_range(value), value)

    def test_non_ascii_digits(self) -> None:
        """
        Only ASCII digits count (no Unicode decimal digits).
        """
        self.assertIsNone(parse_range("bytes=\u0663-\u0664"))
        self.assertIsNone(parse_range("bytes=\uff10-\uff19"))

    def test_dash_alone(self) -> None:
        """
        ``bytes=-`` has neither position and is invalid.
        """
        self.assertIsNone(parse_range(b"bytes=-"))

    def test_three_positions(self) -> None:
        """
        ``bytes=1-2-3`` is invalid.
        """
        self.assertIsNone(parse_range(b"bytes=1-2-3"))

    def test_no_dash(self) -> None:
        """
        A bare number is not a range-spec.
        """
        self.assertIsNone(parse_range(b"bytes=5"))

    def test_one_bad_spec_spoils_all(self) -> None:
        """
        A syntax error in any spec invalidates the whole header.
        """
        self.assertIsNone(parse_range(b"bytes=0-9,x,20-29"))
        self.assertIsNone(parse_range(b"bytes=0-9,9-5"))

    def test_thirty_two_specs(self) -> None:
        """
        Exactly 32 specs are accepted.
        """
        specs = parse_range(_specs(MAX_RANGE_SPECS, "0-9"))
        assert specs is not None
        self.assertEqual(len(specs), 32)

    def test_thirty_three_specs(self) -> None:
        """
        33 specs make the header ignored.
        """
        self.assertIsNone(parse_range(_specs(MAX_RANGE_SPECS + 1, "0-9")))

    def test_empty_elements_not_counted(self) -> None:
        """
        Empty elements do not count towards the 32-spec limit.
        """
        value = "bytes=" + ",,".join(["0-9"] * 32) + ",,,,"
        specs = parse_range(value)
        assert specs is not None
        self.assertEqual(len(specs), 32)


class SelectRangeTests(SynchronousTestCase):
    """
    The whole Range decision given raw header lines (downloads-uploads.md §5.1).
    """

    def test_no_header(self) -> None:
        """
        No ``Range`` line (``None`` or an empty list) means the full 200.
        """
        self.assertIsNone(select_range(None, N))
        self.assertIsNone(select_range([], N))

    def test_several_lines(self) -> None:
        """
        Several ``Range`` lines are malformed: full 200, even if each is valid
        or they are identical.
        """
        self.assertIsNone(select_range([b"bytes=0-9", b"bytes=20-29"], N))
        self.assertIsNone(select_range([b"bytes=0-9", b"bytes=0-9"], N))
        self.assertIsNone(select_range([b"bytes=5000-", b"bytes=6000-"], N))

    def test_invalid_is_ignored_not_416(self) -> None:
        """
        An invalid header is ignored (200) even on an empty file.
        """
        self.assertIsNone(select_range([b"bytes=abc"], 0))

    def test_unsatisfiable_carries_size(self) -> None:
        """
        The 416 exception carries the size and the ``bytes */N`` value.
        """
        exc = self.assertRaises(RangeNotSatisfiable, select_range, [b"bytes=2000-"], N)
        self.assertEqual(exc.size, N)
        self.assertEqual(exc.content_range, "bytes */1000")

    def test_duplicates_not_coalesced(self) -> None:
        """
        The same satisfiable spec twice is two ranges: full 200.
        """
        self.assertIsNone(select_range([b"bytes=0-9,0-9"], N))

    def test_thirty_two_specs_one_satisfiable(self) -> None:
        """
        32 specs of which one is satisfiable give that single 206 part.
        """
        self.assertEqual(select_range([_specs(32, "10-19")], N), (10, 10))

    def test_huge_start(self) -> None:
        """
        A start position with thousands of digits is unsatisfiable (416).
        """
        self.assertRaises(RangeNotSatisfiable, select_range, [b"bytes=" + b"9" * 5000 + b"-"], N)

    def test_huge_end_and_suffix(self) -> None:
        """
        A huge last position or suffix length selects up to the end of the file.
        """
        self.assertEqual(select_range([b"bytes=10-" + b"9" * 5000], N), (10, 990))
        self.assertEqual(select_range([b"bytes=-" + b"9" * 5000], N), (0, N))

    def test_one_byte_file(self) -> None:
        """
        On a 1-byte file ``0-0``, ``0-`` and ``-1`` all select the byte; ``1-`` is 416.
        """
        for value in (b"bytes=0-0", b"bytes=0-", b"bytes=-1", b"bytes=-9"):
            self.assertEqual(select_range([value], 1), (0, 1), value)
        self.assertRaises(RangeNotSatisfiable, select_range, [b"bytes=1-"], 1)

    @settings(max_examples=300, deadline=None)
    @given(
        size=st.one_of(st.integers(0, 5), st.integers(0, 2 ** 63)),
        spec=st.one_of(
            st.tuples(st.integers(0, 2 ** 64), st.integers(0, 2 ** 64)).map(
                lambda ab: "%d-%d" % (min(ab), max(ab))),
            st.integers(0, 2 ** 64).map(lambda a: "%d-" % (a,)),
            st.integers(0, 2 ** 64).map(lambda s: "-%d" % (s,)),
        ),
        unit=st.sampled_from(["bytes", "BYTES", "Bytes"]),
        before=st.sampled_from(["", " ", "\t", " ,"]),
        after=st.sampled_from(["", " ", ",", " , "]),
    )
    def test_single_spec_inside_file(self, size: int, spec: str, unit: str, before: str,
                                     after: str) -> None:
        """
        For any size N >= 0 and any syntactically valid single spec, the
        answer is a 416 or a 206 part of length >= 1 lying inside [0, N);
        never the full 200.
        """
        value = (unit + "=" + before + spec + after).encode("ascii")
        try:
            selection = select_range([value], size)
        except RangeNotSatisfiable as exc:
            self.assertEqual(exc.size, size)
            return
        assert selection is not None, value
        offset, length = selection
        self.assertGreaterEqual(offset, 0)
        self.assertGreaterEqual(length, 1)
        self.assertLessEqual(offset + length, size)

    @settings(max_examples=300, deadline=None)
    @given(value=st.one_of(st.binary(max_size=80),
                           st.text(alphabet="bytesBYTES=-,0123456789 \t+x", max_size=40)))
    def test_never_raises_on_garbage(self, value: bytes | str) -> None:
        """
        Arbitrary header values never raise anything but RangeNotSatisfiable.
        """
        raw = value if isinstance(value, bytes) else value.encode("ascii")
        try:
            result = select_range([raw], 100)
        except RangeNotSatisfiable as e:
            self.assertEqual(e.size, 100)
            return
        if result is not None:
            offset, length = result
            self.assertGreaterEqual(offset, 0)
            self.assertGreaterEqual(length, 1)
            self.assertLessEqual(offset + length, 100)


class EvaluateRangeTests(SynchronousTestCase):
    """
    The order of §5.1: method, Range lines, If-Range, then the Range value.
    """

    def evaluate(self, method: bytes, lines: list[bytes] | None,
                 if_range: bytes | None) -> tuple[int, int] | None:
        """
        ``evaluate_range`` for the 1000-byte test file.
        """
        return evaluate_range(method, lines, if_range, size=N, etag=ETAG,
                              last_modified=LAST_MODIFIED, now=NOW)

    def test_failing_if_range_beats_416(self) -> None:
        """
        A failing If-Range gives the full 200 even when the Range is unsatisfiable.
        """
        self.assertIsNone(self.evaluate(b"GET", [b"bytes=5000-"], b'"other"'))

    def test_passing_if_range_keeps_416(self) -> None:
        """
        A matching If-Range lets an unsatisfiable Range become 416.
        """
        self.assertRaises(RangeNotSatisfiable, self.evaluate, b"GET", [b"bytes=5000-"],
                          ETAG.encode())

    def test_if_range_without_range(self) -> None:
        """
        If-Range without Range is ignored: full 200.
        """
        self.assertIsNone(self.evaluate(b"GET", None, ETAG.encode()))

    def test_if_range_with_several_range_lines(self) -> None:
        """
        Several Range lines give 200 whatever If-Range says.
        """
        self.assertIsNone(self.evaluate(b"GET", [b"bytes=0-9", b"bytes=0-9"], ETAG.encode()))

    def test_head_ignores_everything(self) -> None:
        """
        HEAD answers 200 even to an unsatisfiable Range.
        """
        self.assertIsNone(self.evaluate(b"HEAD", [b"bytes=5000-"], None))

    def test_if_range_date_passes(self) -> None:
        """
        A matching old Last-Modified date in If-Range lets the Range apply.
        """
        self.assertEqual(self.evaluate(b"GET", [b"bytes=-10"], LAST_MODIFIED_TEXT.encode()),
                         (990, 10))


class IfRangeTests(SynchronousTestCase):
    """
    ``If-Range`` evaluation (downloads-uploads.md §5.8).
    """

    def allows(self, value: bytes | str | None, *, last_modified: int = LAST_MODIFIED,
               now: float = NOW) -> bool:
        """
        ``if_range_allows`` against the test file's validators.
        """
        return if_range_allows(value, etag=ETAG, last_modified=last_modified, now=now)

    def test_absent(self) -> None:
        """
        No If-Range header imposes no condition.
        """
        self.assertTrue(self.allows(None))

    def test_strong_equal(self) -> None:
        """
        The current strong ETag matches, as bytes or text, with outer whitespace.
        """
        self.assertTrue(self.allows(ETAG))
        self.assertTrue(self.allows(ETAG.encode()))
        self.assertTrue(self.allows(" " + ETAG + "\t"))

    def test_weak(self) -> None:
        """
        A weak tag never matches, even with the current opaque value.
        """
        self.assertIs(self.allows("W/" + ETAG), False)

    def test_different(self) -> None:
        """
        Another tag, a truncated tag or a differently-cased tag does not match.
        """
        self.assertIs(self.allows('"other"'), False)
        self.assertIs(self.allows(ETAG[:-1]), False)
        self.assertIs(self.allows(ETAG.upper()), False)
        self.assertIs(self.allows('"' + ETAG + '"'), False)

    def test_unquoted_tag(self) -> None:
        """
        The opaque value without quotes is neither a tag nor a date.
        """
        self.assertIs(self.allows(ETAG.strip('"')), False)

    def test_date_equal(self) -> None:
        """
        An IMF-fixdate equal to an old Last-Modified matches.
        """
        self.assertTrue(self.allows(LAST_MODIFIED_TEXT))

    def test_date_one_second_old(self) -> None:
        """
        A Last-Modified exactly one second before now is old enough.
        """
        self.assertTrue(self.allows(LAST_MODIFIED_TEXT, now=LAST_MODIFIED + 1.0))

    def test_date_within_current_second(self) -> None:
        """
        An equal date does not match while Last-Modified is within the
        current second.
        """
        self.assertIs(self.allows(LAST_MODIFIED_TEXT, now=LAST_MODIFIED + 0.999), False)
        self.assertIs(self.allows(LAST_MODIFIED_TEXT, now=LAST_MODIFIED), False)

    def test_date_in_future(self) -> None:
        """
        A Last-Modified in the future never matches.
        """
        self.assertIs(self.allows(LAST_MODIFIED_TEXT, now=LAST_MODIFIED - 100), False)

    def test_date_different(self) -> None:
        """
        A date one second off either way does not match.
        """
        self.assertIs(self.allows("Sun, 17 Mar 2024 14:58:29 GMT"), False)
        self.assertIs(self.allows("Sun, 17 Mar 2024 14:58:31 GMT"), False)

    def test_rfc850(self) -> None:
        """
        The obsolete RFC 850 form is accepted.
        """
        self.assertTrue(self.allows("Sunday, 17-Mar-24 14:58:30 GMT"))

    def test_rfc850_two_digit_year(self) -> None:
        """
        A two-digit year more than 50 years ahead is taken as the past century.
        """
        old = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
        self.assertTrue(self.allows("Sunday, 06-Nov-94 08:49:37 GMT", last_modified=old))

    def test_asctime(self) -> None:
        """
        The asctime form is accepted, with a space-padded day.
        """
        self.assertTrue(self.allows("Sun Mar 17 14:58:30 2024"))
        early = 1709304000  # Fri, 01 Mar 2024 14:40:00 GMT
        self.assertTrue(self.allows("Fri Mar  1 14:40:00 2024", last_modified=early))

    def test_garbage(self) -> None:
        """
        Unparsable values do not match.
        """
        for value in ("", "yesterday", "1710687510", "Sun, 17 Mar 2024 14:58:30 UTC",
                      "sun, 17 Mar 2024 14:58:30 GMT", "Sun, 17 mar 2024 14:58:30 GMT",
                      "Sun, 17 Mar 2024 14:58:30 gmt", "Sun, 17 Mar 2024 14:58:30",
                      "Sun,  17 Mar 2024 14:58:30 GMT", "Sun, 30 Feb 2024 14:58:30 GMT",
                      "Sun, 17 Mar 2024 25:58:30 GMT", "Sun, 17 Mar 2024 14:58:60 GMT",
                      "Sun, 7 Mar 2024 14:58:30 GMT", "Sun Mar 17 14:58:30 24",
                      'W/"', '"', "\u0661"):
            self.assertIs(self.allows(value), False, value)

    def test_garbage_bytes(self) -> None:
        """
        Non-ASCII bytes do not match and do not raise.
        """
        self.assertIs(self.allows(b"\xff\xfe"), False)


class ValidatorTests(SynchronousTestCase):
    """
    ``ETag``, ``Last-Modified`` and ``Content-Range`` values (downloads-uploads.md §3.4, §5.4).
    """

    def test_etag_format(self) -> None:
        """
        The ETag is the quoted lower-case hex of inode, size and mtime in ns.
        """
        st_result = os.stat_result((0o100644, 0x1A2B3, 1, 1, 0, 0, 0x4F2, 0, 1, 2),
                                   {"st_mtime_ns": 0x17BD8A3C1E9A4B00})
        self.assertEqual(etag_for(st_result), '"1a2b3-4f2-17bd8a3c1e9a4b00"')

    def test_etag_real_file(self) -> None:
        """
        The ETag of a real file is built from its own stat.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"hello")
        result = os.stat(path.path)
        self.assertEqual(etag_for(result), '"%x-5-%x"' % (result.st_ino, result.st_mtime_ns))

    def test_http_date(self) -> None:
        """
        ``http_date`` writes an IMF-fixdate, truncated to the second.
        """
        self.assertEqual(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertEqual(http_date(LAST_MODIFIED + 0.999), LAST_MODIFIED_TEXT)
        self.assertEqual(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT")

    def test_http_date_round_trip(self) -> None:
        """
        A date written by ``http_date`` is accepted back by If-Range.
        """
        self.assertTrue(if_range_allows(http_date(LAST_MODIFIED), etag=ETAG,
                                        last_modified=LAST_MODIFIED, now=NOW))

    def test_content_range(self) -> None:
        """
        ``content_range`` writes ``bytes first-last/size``.
        """
        self.assertEqual(content_range(0, 500, 1000), "bytes 0-499/1000")
        self.assertEqual(content_range(999, 1, 1000), "bytes 999-999/1000")

    def test_content_range_outside(self) -> None:
        """
        An empty part, a negative offset or a part past the end is a programming error.
        """
        self.assertRaises(ValueError, content_range, 0, 0, 1000)
        self.assertRaises(ValueError, content_range, -1, 5, 1000)
        self.assertRaises(ValueError, content_range, 999, 2, 1000)


class ContentDispositionTests(SynchronousTestCase):
    """
    The download file name header (downloads-uploads.md §3.3).
    """

    def test_plain_name(self) -> None:
        """
        A printable ASCII name gives upstream's exact header.
        """
        self.assertEqual(content_disposition("server.properties"),
                         'attachment; filename="server.properties"')

    def test_quotes(self) -> None:
        """
        Double quotes are backslash-escaped and need no ``filename*``.
        """
        self.assertEqual(content_disposition('my "best" map.zip'),
                         'attachment; filename="my \\"best\\" map.zip"')

    def test_non_ascii(self) -> None:
        """
        Each non-ASCII character becomes one ``_`` and ``filename*`` carries the UTF-8.
        """
        expected = ("attachment; filename=\"carte-_t_.zip\"; "
                    "filename*=UTF-8''carte-%C3%A9t%C3%A9.zip")
        self.assertEqual(content_disposition("carte-\u00e9t\u00e9.zip"), expected)
        self.assertEqual(content_disposition("carte-\u00e9t\u00e9.zip".encode("utf-8")),
                         expected)

    def test_backslash(self) -> None:
        """
        A backslash is doubled and needs no ``filename*``.
        """
        self.assertEqual(content_disposition("back\\slash.txt"),
                         'attachment; filename="back\\\\slash.txt"')

    def test_control_characters(self) -> None:
        """
        Control characters and DEL become ``_`` and are percent-encoded.
        """
        self.assertEqual(
            content_disposition("a\nb\tc\x1bd\x7f.txt"),
            "attachment; filename=\"a_b_c_d_.txt\"; filename*=UTF-8''a%0Ab%09c%1Bd%7F.txt")

    def test_invalid_utf8(self) -> None:
        """
        Each invalid UTF-8 byte becomes U+FFFD, shown as ``_`` and encoded as EF BF BD.
        """
        self.assertEqual(
            content_disposition(b"bad\xff\xfename"),
            "attachment; filename=\"bad__name\"; filename*=UTF-8''bad%EF%BF%BD%EF%BF%BDname")

    def test_surrogate_escaped_name(self) -> None:
        """
        A name decoded with ``os.fsdecode`` gives the same header as its bytes.
        """
        raw = b"bad\xff\xfename"
        self.assertEqual(content_disposition(raw.decode("utf-8", "surrogateescape")),
                         content_disposition(raw))

    def test_lone_surrogate(self) -> None:
        """
        A lone surrogate that no byte stands for still gives an ASCII header.
        """
        value = content_disposition("x\ud800y")
        self.assertTrue(value.isascii())
        self.assertTrue(value.startswith('attachment; filename="x'))

    def test_attr_chars_kept(self) -> None:
        """
        The RFC 8187 attr-char punctuation stays literal in ``filename*``;
        space, percent, quote, apostrophe, star and parentheses are encoded.
        """
        name = "a!#$&+-.^_`|~z %\"'*()\\\u00e9"
        self.assertEqual(
            content_disposition(name),
            "attachment; filename=\"a!#$&+-.^_`|~z %\\\"'*()\\\\_\"; "
            "filename*=UTF-8''a!#$&+-.^_`|~z%20%25%22%27%2A%28%29%5C%C3%A9")

    def test_astral_character(self) -> None:
        """
        A character outside the BMP is one ``_`` and four encoded bytes.
        """
        self.assertEqual(
            content_disposition("\U0001F600.txt"),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''%F0%9F%98%80.txt")

    def test_backup_name(self) -> None:
        """
        A backup archive name is plain ASCII.
        """
        name = "0c5b1d6e-3f0a-4b8e-9d2c-7a6f5e4d3c2b.tar.gz"
        self.assertEqual(content_disposition(name), 'attachment; filename="%s"' % (name,))

    @settings(max_examples=300, deadline=None)
    @given(name=st.one_of(st.text(), st.binary()))
    def test_always_ascii(self, name: str | bytes) -> None:
        """
        Whatever the name, the header is pure ASCII without CR, LF or NUL.
        """
        value = content_disposition(name)
        self.assertTrue(value.isascii())
        for char in "\r\n\x00":
            self.assertNotIn(char, value)
