"""
Remote pulls (api.md §6) over ``files.pull``:

* ``GET files/pull`` → 200 ``{"downloads": [{"Identifier": "<uuid>",
  "Progress": 0.42}]}`` (capitalised keys, ``[]`` when none);
* ``POST files/pull`` ``{"url", "root", "directory", "file_name",
  "use_header", "foreground"}`` → 202 ``{"identifier": "<uuid>"}``, or with
  ``foreground: true`` 200 and the stat object of the written file;
* ``DELETE files/pull/{download}`` → 204, whatever the identifier (only a
  pull of this server is cancelled).

All three answer 400 ``This functionality is not currently enabled on this
instance.`` while ``api.disable_remote_download`` is set (checked after the
bearer check and the server lookup); ``POST`` then passes the write guard.

``POST`` checks, in order: ``url`` and a ``root`` (or the deprecated
``directory``) are given (400); the URL parses (400 ``An error occurred while
parsing that URL: ...``); the volume has space (400); then, when the name
does not depend on the answer (no ``use_header``), the name (400) and the
denylist (403) — project: upstream finds those only while downloading; the
server runs fewer than 3 pulls (400).  A foreground pull answers every
failure the URL causes with 400 (project; upstream 500): the SSRF guard, a
redirect, a status other than 200, a missing ``Content-Length``, a connection
that fails or ends early, a malformed ``Content-Disposition``, a bad name;
filesystem refusals keep their statuses (403 denylist, 400 quota, 404 path).
A foreground request that goes away leaves its pull running (api.md §2.1).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..files import FileServices
from ..files.fetch import PullFailed
from ..files.pull import TooManyPulls
from ..files.pullspec import InvalidName, InvalidUrl, parse_url, target_name
from ..fs import QuotaExceeded, clean_path
from ..fs.listing import stat_entry
from ..node import Node
from ..servers.server import Server
from .body import read_object
from .errors import BadRequest, error_body
from .filebase import FileRoute, bool_field, text_field
from .request import ApiRequest

DISABLED = "This functionality is not currently enabled on this instance."
REQUIRED = "The url field and a root (or directory) field are required."
CANCELLED = "The download was cancelled."
TIMED_OUT = "The download did not finish within 12 hours."


class _SwitchedRoute(FileRoute):
    """
    A pull route: off while ``api.disable_remote_download`` is set.
    """

    def render(self, request: Request) -> int | bytes:
        """
        The switch, then the write guard and the handler.
        """
        if self.node.config.api.disable_remote_download:
            return error_body(request, BadRequest(DISABLED))
        return super().render(request)


class PullRoute(_SwitchedRoute):
    """
    ``files/pull`` and, below it, ``files/pull/{download}``.
    """

    isLeaf = False
    modifying = frozenset({b"POST"})

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        A download identifier (a trailing slash is the route itself).
        """
        if not path:
            return self
        return CancelRoute(self.node, self.game_server, self.services,
                           path.decode("ascii", "replace"))

    def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        The server's running pulls.
        """
        pulls = self.services.pulls.of_server(self.game_server.uuid)
        return {"downloads": [pull.describe() for pull in pulls]}

    async def render_POST(self, request: ApiRequest) -> dict[str, Any]:
        """
        Start a pull; wait for it with ``foreground``.
        """
        body = read_object(request)
        url_text = text_field(body, "url")
        root = text_field(body, "root") or text_field(body, "directory")
        file_name = text_field(body, "file_name")
        use_header = bool_field(body, "use_header")
        foreground = bool_field(body, "foreground")
        if not url_text or not root:
            raise BadRequest(REQUIRED)
        try:
            url = parse_url(url_text)
        except InvalidUrl as e:
            raise BadRequest(str(e))
        volume = self.game_server.volume
        if not await self.blocking(volume.has_space):
            raise QuotaExceeded(clean_path(root))
        if not use_header:
            try:
                name = target_name(url, file_name, None)
            except InvalidName as e:
                raise BadRequest(str(e))
            volume.check_denied(root + "/" + name)
        try:
            pull = self.services.pulls.start(self.game_server, url, root, file_name=file_name,
                                             use_header=use_header)
        except TooManyPulls as e:
            raise BadRequest(str(e))
        if not foreground:
            request.setResponseCode(202)
            return {"identifier": pull.identifier}
        try:
            path = await pull.wait()
        except (PullFailed, InvalidName) as e:
            raise BadRequest(str(e))
        except TimeoutError:
            raise BadRequest(TIMED_OUT)
        except CancelledError:
            if getattr(request, "gone", False):
                raise  # the client left: nothing to answer
            raise BadRequest(CANCELLED)
        entry: dict[str, Any] = await self.blocking(stat_entry, volume, path)
        return entry


class CancelRoute(_SwitchedRoute):
    """
    ``DELETE files/pull/{download}``.
    """

    def __init__(self, node: Node, server: Server, services: FileServices,
                 identifier: str) -> None:
        super().__init__(node, server, services)
        self._identifier = identifier

    def render_DELETE(self, request: ApiRequest) -> None:
        """
        Cancel the pull if it is this server's; 204 in every case.
        """
        self.services.pulls.cancel(self.game_server.uuid, self._identifier)
        request.setResponseCode(204)


PULL_ROUTES: dict[bytes, type[FileRoute]] = {b"pull": PullRoute}
