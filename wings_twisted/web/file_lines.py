"""
The fork's line routes (api.md §8.6–§8.10): ``GET files/lines``,
``GET files/metadata``, ``POST files/replace-line``, ``POST
files/insert-lines``, ``POST files/delete-lines``.  The line model and the
streaming are ``fs.lines``; this module validates the requests and renders
the answers.  Edits of one server run one at a time (``FileServices``'s
per-server lock), so two concurrent edits of the same file cannot lose each
other's change.  Denylisted files are 403 (project), directories 400,
missing files 404.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredLock

from ..fs import clean_path
from ..fs.lines import BadLines, delete_lines, insert_lines, metadata, read_lines, replace_line
from .body import read_object
from .errors import BadRequest
from .filebase import FileRoute, int_field, list_field, query_text, required_file, text_field, \
    text_items
from .request import ApiRequest


def _bound(request: ApiRequest, name: bytes) -> int:
    text = query_text(request, name)
    if text is None or not text.isdigit() or int(text) < 1:
        raise BadRequest("The {} parameter must be a whole number of at least 1.".format(
            name.decode()))
    return int(text)


def _display(path: str) -> str:
    return "/" + clean_path(path)


class LinesRoute(FileRoute):
    """
    ``GET files/lines?file=&start=&end=``.
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        Lines ``start``…``end`` (1-based, inclusive) that exist.
        """
        path = required_file(request)
        start, end = _bound(request, b"start"), _bound(request, b"end")
        if end < start:
            raise BadRequest("The end line comes before the start line.")
        options = self.node.config.partial_edit
        if end - start + 1 > options.max_lines_per_request:
            raise BadRequest("Too many lines requested (maximum {}).".format(
                options.max_lines_per_request))
        total, lines = await self.blocking(
            lambda: read_lines(self.game_server.volume, path, start, end,
                               max_line_size=options.max_line_size,
                               caching=options.enable_line_caching))
        return {"file": _display(path), "start_line": start,
                "end_line": min(end, total), "total_lines": total,
                "lines": [{"number": n, "content": c} for n, c in lines]}


class MetadataRoute(FileRoute):
    """
    ``GET files/metadata?file=``.
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        Size, line count, encoding, line endings and times.
        """
        path = required_file(request)
        found: dict[str, Any] = await self.blocking(metadata, self.game_server.volume, path)
        return {"file": _display(path), **found}


class _LineEdit(FileRoute):
    modifying = frozenset({b"POST"})

    def lock(self) -> DeferredLock:
        locks: dict[str, DeferredLock] = self.services.edit_locks
        return locks.setdefault(self.game_server.uuid, DeferredLock())

    async def edit(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        lock = self.lock()
        await lock.acquire()
        try:
            await self.blocking(lambda: fn(self.game_server.volume, *args, **kwargs))
        except BadLines as e:
            raise BadRequest(str(e))
        finally:
            lock.release()


def _required_int(body: dict[str, Any], name: str) -> int:
    value = int_field(body, name)
    if value is None:
        raise BadRequest("The {} field is required.".format(name))
    return value


class ReplaceLineRoute(_LineEdit):
    """
    ``POST files/replace-line``.
    """

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Replace one line, keeping its terminator; 204.
        """
        body = read_object(request)
        path = text_field(body, "file")
        if not path:
            raise BadRequest("The file field is required.")
        await self.edit(replace_line, path, _required_int(body, "line_number"),
                        text_field(body, "content"),
                        max_line_size=self.node.config.partial_edit.max_line_size)
        request.setResponseCode(204)


class InsertLinesRoute(_LineEdit):
    """
    ``POST files/insert-lines``.
    """

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Insert lines before a line (or append); 204.
        """
        body = read_object(request)
        path = text_field(body, "file")
        if not path:
            raise BadRequest("The file field is required.")
        lines = text_items(list_field(body, "lines"))
        await self.edit(insert_lines, path, _required_int(body, "line_number"), lines,
                        max_line_size=self.node.config.partial_edit.max_line_size)
        request.setResponseCode(204)


class DeleteLinesRoute(_LineEdit):
    """
    ``POST files/delete-lines``.
    """

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Remove a range of lines; 204.
        """
        body = read_object(request)
        path = text_field(body, "file")
        if not path:
            raise BadRequest("The file field is required.")
        await self.edit(delete_lines, path, _required_int(body, "start_line"),
                        _required_int(body, "end_line"))
        request.setResponseCode(204)


LINE_ROUTES: dict[bytes, type[FileRoute]] = {
    b"lines": LinesRoute,
    b"metadata": MetadataRoute,
    b"replace-line": ReplaceLineRoute,
    b"insert-lines": InsertLinesRoute,
    b"delete-lines": DeleteLinesRoute,
}
