"""
The fork's line routes (api.md §8.6–§8.10) and their line model, through
the daemon's real ``Site`` in memory, plus the model on its own
(``fs.lines``) with a property test that edits keep every other byte.
"""

from __future__ import annotations

import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs import Volume
from wings_twisted.fs.lines import CHECKPOINT, delete_lines, insert_lines, read_lines, \
    replace_line

from .test_file_routes import DENIED, FileRouteCase


class LinesRouteTests(FileRouteCase):
    """
    ``GET files/lines`` and ``GET files/metadata``.
    """

    def test_lines(self) -> None:
        """
        1-based inclusive ranges; CRLF terminators are not content; the last
        line counts without a terminator; a range past the end is cut.
        """
        self.root.child("log").setContent(b"one\r\ntwo\nthree")
        answer = self.call("GET", "lines?file=log&start=2&end=9").json()
        self.assertEqual(answer, {"file": "/log", "start_line": 2, "end_line": 3,
                                  "total_lines": 3,
                                  "lines": [{"number": 2, "content": "two"},
                                            {"number": 3, "content": "three"}]})
        past = self.call("GET", "lines?file=log&start=7&end=8").json()
        self.assertEqual((past["lines"], past["end_line"]), ([], 3))

    def test_validation(self) -> None:
        """
        Bad bounds and too many lines are 400; a directory 400; missing 404;
        denylisted 403.
        """
        self.root.child("log").setContent(b"a\n")
        self.root.child("dir").makedirs()
        self.root.child("x.cfg").setContent(b"a\n")
        self.server.volume.set_denylist(["*.cfg"])
        for query in ("start=0&end=1", "start=2&end=1", "start=a&end=2", "end=2"):
            self.error(self.call("GET", "lines?file=log&" + query), 400)
        self.error(self.call("GET", "lines?file=log&start=1&end=501"), 400,
                   "Too many lines requested (maximum 500).")
        self.error(self.call("GET", "lines?file=dir&start=1&end=1"), 400)
        self.error(self.call("GET", "lines?file=nope&start=1&end=1"), 404)
        self.error(self.call("GET", "lines?file=x.cfg&start=1&end=1"), 403, DENIED)

    def test_metadata(self) -> None:
        """
        Line count, encoding by BOM or validity, and the kind of endings.
        """
        cases = [(b"a\nb\n", 2, "utf-8", "LF"), (b"a\r\nb", 2, "utf-8", "CRLF"),
                 (b"a\r\nb\n", 2, "utf-8", "mixed"), (b"abc", 1, "utf-8", "none"),
                 (b"\xef\xbb\xbfa\n", 1, "utf-8-bom", "LF"), (b"\xff\xfea\x00", 1, "utf-16le", "none"),
                 (b"\xc3\x28\n", 1, "unknown", "LF"), (b"", 0, "utf-8", "none")]
        for data, total, encoding, ending in cases:
            self.root.child("f").setContent(data)
            answer = self.call("GET", "metadata?file=f").json()
            self.assertEqual((answer["total_lines"], answer["encoding"], answer["line_ending"],
                              answer["size"], answer["file"]),
                             (total, encoding, ending, len(data), "/f"), data)


class LineEditRouteTests(FileRouteCase):
    """
    ``replace-line``, ``insert-lines`` and ``delete-lines``.
    """

    def test_edits_keep_terminators_and_mode(self) -> None:
        """
        Each edit keeps the other lines, their terminators and the file's
        mode.
        """
        path = self.root.child("cfg")
        path.setContent(b"a=1\r\nb=2\r\nc=3")
        os.chmod(path.path, 0o600)
        self.assertEqual(self.call("POST", "replace-line", {"file": "cfg", "line_number": 2,
                                                           "content": "b=9"}).status, 204)
        self.assertEqual(path.getContent(), b"a=1\r\nb=9\r\nc=3")
        self.assertEqual(self.call("POST", "insert-lines", {"file": "cfg", "line_number": 4,
                                                           "lines": ["d=4"]}).status, 204)
        self.assertEqual(path.getContent(), b"a=1\r\nb=9\r\nc=3\r\nd=4\r\n")
        self.assertEqual(self.call("POST", "delete-lines", {"file": "cfg", "start_line": 1,
                                                           "end_line": 2}).status, 204)
        self.assertEqual(path.getContent(), b"c=3\r\nd=4\r\n")
        self.assertEqual(stat.S_IMODE(os.stat(path.path).st_mode), 0o600)

    def test_validation(self) -> None:
        """
        Out-of-range lines, line breaks in content and empty inserts are
        400; missing 404; denylisted 403; the file is left as it was.
        """
        path = self.root.child("cfg")
        path.setContent(b"a\nb\n")
        self.root.child("x.cfg").setContent(b"a\n")
        self.server.volume.set_denylist(["x.cfg"])
        for route, body in (("replace-line", {"line_number": 3, "content": "x"}),
                            ("replace-line", {"line_number": 1, "content": "x\ny"}),
                            ("replace-line", {"line_number": 1, "content": "x" * 10241}),
                            ("insert-lines", {"line_number": 4, "lines": ["x"]}),
                            ("insert-lines", {"line_number": 1, "lines": []}),
                            ("delete-lines", {"start_line": 2, "end_line": 3}),
                            ("delete-lines", {"start_line": 0, "end_line": 1})):
            self.error(self.call("POST", route, dict(body, file="cfg")), 400)
        self.assertEqual(path.getContent(), b"a\nb\n")
        self.error(self.call("POST", "delete-lines", {"file": "nope", "start_line": 1,
                                                     "end_line": 1}), 404)
        self.error(self.call("POST", "replace-line", {"file": "x.cfg", "line_number": 1,
                                                     "content": "y"}), 403, DENIED)


class LineModelTests(SynchronousTestCase):
    """
    ``fs.lines`` on a volume, without HTTP.
    """

    def setUp(self) -> None:
        self.root = FilePath(self.mktemp())
        self.volume = Volume(self.root.path, uid=os.getuid(), gid=os.getgid(), chown=False)
        self.volume.ensure_root()

    def test_checkpoints(self) -> None:
        """
        Reads far into a long file start from the cached checkpoint and give
        the same lines as a full scan.
        """
        lines = ["line {}".format(n) for n in range(1, 3 * CHECKPOINT)]
        self.root.child("big").setContent(("\n".join(lines) + "\n").encode())
        for caching in (True, False):
            total, found = read_lines(self.volume, "big", 2 * CHECKPOINT + 5,
                                      2 * CHECKPOINT + 7, max_line_size=100, caching=caching)
            self.assertEqual(total, len(lines))
            self.assertEqual(found, [(n, "line {}".format(n))
                                     for n in range(2 * CHECKPOINT + 5, 2 * CHECKPOINT + 8)])

    def test_long_lines_cut_on_characters(self) -> None:
        """
        A line over the limit is cut on a UTF-8 character boundary.
        """
        self.root.child("f").setContent("ééé".encode() + b"\n")
        _, found = read_lines(self.volume, "f", 1, 1, max_line_size=3)
        self.assertEqual(found, [(1, "é")])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.sampled_from(["x", "yy", "", "é", "\r"]), max_size=8),
           st.lists(st.sampled_from(["\n", "\r\n", ""]), max_size=8), st.data())
    def test_edits_touch_only_their_lines(self, contents: list[str], ends: list[str],
                                          data: st.DataObject) -> None:
        """
        Replace, insert and delete change exactly the lines they name: the
        result equals the same edit on the parsed list of lines.
        """
        pieces = [c + (ends[i] if i < len(ends) else "\n") for i, c in enumerate(contents)]
        text = "".join(pieces)
        path = self.root.child("p")
        path.setContent(text.encode())
        model = _parse(text.encode())
        if not model:
            return
        operation = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        number = data.draw(st.integers(1, len(model)))
        if operation == "replace":
            replace_line(self.volume, "p", number, "NEW", max_line_size=100)
            model[number - 1] = (b"NEW", model[number - 1][1])
        elif operation == "insert":
            number = data.draw(st.integers(1, len(model) + 1))
            insert_lines(self.volume, "p", number, ["I"], max_line_size=100)
            crlf = sum(t == b"\r\n" for _, t in model)
            dominant = b"\r\n" if crlf * 2 > len(model) else b"\n"
            if number == len(model) + 1 and not model[-1][1]:
                model[-1] = (model[-1][0], dominant)
            model.insert(number - 1, (b"I", dominant))
        else:
            end = data.draw(st.integers(number, len(model)))
            delete_lines(self.volume, "p", number, end)
            del model[number - 1:end]
        self.assertEqual(path.getContent(), b"".join(c + t for c, t in model))


def _parse(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for piece in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        out.append(piece)
    lines = []
    rest = data
    for content in out:
        consumed = len(content) + (1 if rest[len(content):len(content) + 1] == b"\n" else 0)
        raw, rest = rest[:consumed], rest[consumed:]
        if raw.endswith(b"\r\n"):
            lines.append((raw[:-2], b"\r\n"))
        elif raw.endswith(b"\n"):
            lines.append((raw[:-1], b"\n"))
        else:
            lines.append((raw, b""))
    return [line for line in lines if line != (b"", b"")]
