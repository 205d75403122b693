"""
The file routes that change a volume (api.md §5.3–§5.7, §5.10, §8.4):
``rename``, ``copy``, ``write``, ``create-directory``, ``delete``, ``chmod``
and the fork's ``touch``.  Each is behind the write guard (``FileRoute``),
parses the Panel's exact body (``DaemonFileRepository``), and works through
the sandboxed volume in a worker thread.

Root+item routes join ``root`` and each name as rooted paths, so surplus
``..`` clamps at the volume root (the Panel's "Move" dialog relies on it).
Lists are processed sequentially in request order and stop at the first
error (project; upstream runs them concurrently); earlier items stay done.

Decisions where the spec leaves room:

* ``rename`` and ``delete`` skip a missing entry silently, but an entry
  reached through a symlink that leads out of the volume is a 404;
* ``chmod`` skips missing entries and final symlinks (never changing a
  link's target), refuses modes above ``7777`` and non-string modes;
* ``write`` streams the request body (which Twisted keeps in a temporary
  file beyond 100 KB) into a temporary file beside the target that is
  renamed over it, so a failed save never destroys the previous content;
* ``touch`` keeps an existing file's content and sets its times to now.
"""

from __future__ import annotations

import time
from typing import IO, Any, cast

from twisted.logger import Logger

from ..fs import AlreadyExists, Escapes, InvalidMove, IsDirectory, NotDirectory, NotFound, \
    QuotaExceeded, Volume, clean_path
from ..fs.copying import copy_entry
from .body import read_object
from .errors import ApiError, BadRequest
from .filebase import FileRoute, join_rooted, list_field, query_text, text_field, text_items
from .request import ApiRequest

log = Logger()

NO_RENAME = "No files to move or rename were provided."
RENAME_EXISTS = "Cannot move or rename file, destination already exists."
INTO_ITSELF = "Cannot move a directory into itself."
NO_DELETE = "No files were specified for deletion."
NO_CHMOD = "No files to chmod were provided."
BAD_MODE = "Invalid file mode."
NO_LENGTH = "Missing Content-Length"
WRITE_DIRECTORY = "Cannot write file, name conflicts with an existing directory by the same name."
NOT_A_DIRECTORY = "Part of the path being created is not a directory (ENOTDIR)."
COPY_CHUNK = 1024 * 1024
#: ``chmod`` bits accepted (project: nothing above ``7777``).
MAX_MODE = 0o7777


class RenameRoute(FileRoute):
    """
    ``PUT files/rename`` (§5.3).
    """

    modifying = frozenset({b"PUT"})

    async def render_PUT(self, request: ApiRequest) -> None:
        """
        Move each pair, in order; 204.
        """
        body = read_object(request)
        root = text_field(body, "root")
        pairs = list_field(body, "files")
        if not pairs:
            raise ApiError(NO_RENAME, status=422)
        moves = []
        for pair in pairs:
            if not isinstance(pair, dict):
                raise BadRequest()
            moves.append((join_rooted(root, text_field(pair, "from")),
                          join_rooted(root, text_field(pair, "to"))))
        volume = self.game_server.volume
        for source, destination in moves:
            await self.blocking(_rename, volume, source, destination)
        request.setResponseCode(204)


def _rename(volume: Volume, source: str, destination: str) -> None:
    volume.check_denied(source)
    volume.check_denied(destination)
    if clean_path(source) == clean_path(destination):
        return
    if not clean_path(source) or not clean_path(destination):
        raise NotFound("")
    try:
        volume.lstat(source)
    except Escapes:
        raise
    except (NotFound, NotDirectory):
        log.info("Rename of a missing entry skipped: {path}", path=clean_path(source))
        return
    try:
        volume.rename(source, destination, check_denylist=False)
    except AlreadyExists:
        raise BadRequest(RENAME_EXISTS)
    except InvalidMove:
        raise BadRequest(INTO_ITSELF)


class CopyRoute(FileRoute):
    """
    ``POST files/copy`` (§5.4; directories too, fork).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Copy beside the source under the first free "copy" name; 204.
        """
        location = text_field(read_object(request), "location")
        await self.blocking(copy_entry, self.game_server.volume, location)
        request.setResponseCode(204)


class WriteRoute(FileRoute):
    """
    ``POST files/write?file=`` (§5.5): the raw body becomes the file.
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Replace the file atomically with exactly ``Content-Length`` bytes; 204.
        """
        path = query_text(request, b"file") or ""
        length = request.getHeader(b"Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest(NO_LENGTH)
        content = cast(IO[bytes], request.content)
        await self.blocking(_write, self.game_server.volume, path, content, int(length))
        request.setResponseCode(204)


def _write(volume: Volume, path: str, body: IO[bytes], length: int) -> None:
    clean = clean_path(path)
    volume.check_denied(clean)
    directory, _, name = clean.rpartition("/")
    try:
        current = volume.lstat(clean).st_size if clean else 0
    except (NotFound, NotDirectory):
        current = 0
    if not volume.fits(length - current):
        raise QuotaExceeded(clean)
    try:
        writer = volume.begin_write(directory, name, check_denylist=False)
    except IsDirectory:
        raise BadRequest(WRITE_DIRECTORY)
    with writer:
        body.seek(0)
        remaining = length
        while remaining:
            data = body.read(min(COPY_CHUNK, remaining))
            if not data:
                raise BadRequest("The request body ended before Content-Length bytes.")
            writer.write(data)
            remaining -= len(data)
        try:
            writer.commit()
        except IsDirectory:
            raise BadRequest(WRITE_DIRECTORY)


class CreateDirectoryRoute(FileRoute):
    """
    ``POST files/create-directory`` (§5.6).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Create ``path/name`` and its parents (0755, chowned); 204.
        """
        body = read_object(request)
        target = join_rooted(text_field(body, "path"), text_field(body, "name"))
        try:
            await self.node.run_blocking(self.game_server.volume.mkdir, target)
        except NotDirectory:
            raise BadRequest(NOT_A_DIRECTORY)
        request.setResponseCode(204)


class DeleteRoute(FileRoute):
    """
    ``POST files/delete`` (§5.7).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Remove each entry recursively, in order; 204.
        """
        body = read_object(request)
        root = text_field(body, "root")
        names = text_items(list_field(body, "files"))
        if not names:
            raise ApiError(NO_DELETE, status=422)
        volume = self.game_server.volume
        for name in names:
            await self.blocking(_delete, volume, join_rooted(root, name))
        request.setResponseCode(204)


def _delete(volume: Volume, path: str) -> None:
    if not clean_path(path):
        raise NotFound("")
    try:
        volume.remove(path)
    except Escapes:
        raise
    except (NotFound, NotDirectory):
        pass


def parse_mode(value: Any) -> int:
    """
    A chmod ``mode``: an octal string such as ``"755"`` or ``"4755"``.
    """
    if not isinstance(value, str):
        raise BadRequest(BAD_MODE)
    try:
        mode = int(value, 8)
    except ValueError:
        raise BadRequest(BAD_MODE)
    if not 0 <= mode <= MAX_MODE:
        raise BadRequest(BAD_MODE)
    return mode


class ChmodRoute(FileRoute):
    """
    ``POST files/chmod`` (§5.10).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Set each entry's mode; 204.
        """
        body = read_object(request)
        root = text_field(body, "root")
        entries = list_field(body, "files")
        if not entries:
            raise ApiError(NO_CHMOD, status=422)
        changes = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise BadRequest()
            changes.append((join_rooted(root, text_field(entry, "file")),
                            parse_mode(entry.get("mode"))))
        volume = self.game_server.volume
        for path, mode in changes:
            await self.blocking(_chmod, volume, path, mode)
        request.setResponseCode(204)


def _chmod(volume: Volume, path: str, mode: int) -> None:
    try:
        volume.setstat(path, mode=mode)
    except Escapes:
        raise
    except (NotFound, NotDirectory):
        pass


class TouchRoute(FileRoute):
    """
    ``POST files/touch`` (fork, §8.4).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Create the file if missing (parents too), else set its times; 204.
        """
        path = text_field(read_object(request), "file")
        if not path:
            raise BadRequest("The file field is required.")
        await self.blocking(_touch, self.game_server.volume, path)
        request.setResponseCode(204)


def _touch(volume: Volume, path: str) -> None:
    clean = clean_path(path)
    volume.check_denied(clean)
    if not clean:
        raise IsDirectory(clean)
    directory = clean.rpartition("/")[0]
    if directory:
        volume.mkdir(directory)
    with volume.open_file(clean, read=False, write=True, create=True,
                          check_denylist=False) as handle:
        now = time.time()
        handle.utime(now, now)


EDIT_ROUTES: dict[bytes, type[FileRoute]] = {
    b"rename": RenameRoute,
    b"copy": CopyRoute,
    b"write": WriteRoute,
    b"create-directory": CreateDirectoryRoute,
    b"delete": DeleteRoute,
    b"chmod": ChmodRoute,
    b"touch": TouchRoute,
}
