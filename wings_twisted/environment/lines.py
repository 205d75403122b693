"""
Raw process output into console lines (lifecycle.md §14 steps 1-2), the
way upstream's ``ScanReader`` does: split on ``\\n``, drop one trailing
``\\r``, turn every `` \\r`` inside a line into ``\\r\\n``, cut lines
longer than 64 KiB into pieces, drop empty lines, decode UTF-8 with
replacement.  Every environment (process, install scripts, containers)
feeds its output through one ``LineSplitter``.
"""

from __future__ import annotations

import codecs
from typing import Callable

#: Longest console line; longer lines are emitted in pieces of this size.
MAX_LINE = 64 * 1024


class LineSplitter:
    """
    Feed raw bytes, receive complete lines through ``emit``.
    """

    def __init__(self, emit: Callable[[str], None], *, max_line: int = MAX_LINE) -> None:
        self._emit = emit
        self._max = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, data: bytes) -> None:
        """
        Add output; emit every line it completes.
        """
        text = self._pending + self._decoder.decode(data)
        lines = text.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line)
        while len(self._pending) > self._max:
            piece, self._pending = self._pending[:self._max], self._pending[self._max:]
            self._line(piece, cut=True)

    def flush(self) -> None:
        """
        End of stream: emit a final unterminated line.
        """
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._line(rest)

    def _line(self, line: str, cut: bool = False) -> None:
        if not cut and line.endswith("\r"):
            line = line[:-1]
        if not line:
            return
        if " \r" in line:
            line = line.replace(" \r", "\r\n")
        while len(line) > self._max:
            self._emit(line[:self._max])
            line = line[self._max:]
        if line:
            self._emit(line)
