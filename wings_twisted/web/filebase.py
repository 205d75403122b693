"""
What every route under ``/api/servers/{uuid}/files/`` shares (api.md §5,
§6, §8): the route base class with the write guard, and the JSON field
readers of api.md §2.10.

Write guard (api.md §2.9): a route lists the methods that modify the volume
in ``modifying``; for those, ``occupancy.check_writable`` runs after the
bearer check and the server lookup and before anything else (body parsing,
path resolution, denylist, quota), answering 409 while a restore or an
incoming transfer owns the volume.

Field readers: a field that is present with the wrong JSON type is a 400; a
``null`` string is ``""`` and a ``null`` array ``[]``; unknown fields are
ignored; names are matched exactly (project).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.server import Request

from ..files import FileServices
from ..fs import NotDirectory, NotFound

from ..node import Node
from ..servers.occupancy import WriteGuarded
from ..servers.server import Server
from .errors import GENERIC_MESSAGE, BadRequest, Conflict, JsonResource, error_body
from .request import query_arg

T = TypeVar("T")

FILE_REQUIRED = "The file parameter is required."


class FileRoute(JsonResource):
    """
    One route of a server's files.

    :param services: the node's file services (``files.FileServices``), for
        routes that keep state between requests.
    """

    isLeaf = True
    #: Methods of this route that modify the volume (write guard).
    modifying: ClassVar[frozenset[bytes]] = frozenset()

    def __init__(self, node: Node, server: Server, services: FileServices) -> None:
        super().__init__()
        self.node = node
        self.game_server = server
        self.services = services

    def render(self, request: Request) -> int | bytes:
        """
        The write guard for modifying methods, then the handler.
        """
        if request.method in self.modifying:
            try:
                self.game_server.check_writable()
            except WriteGuarded as e:
                return error_body(request, Conflict(str(e)))
        return super().render(request)

    def blocking(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        ``fn(*args)`` on a worker thread.  A path component that is not a
        directory is "does not exist" (404) on the file routes (api.md
        §2.11); a route that says otherwise calls ``run_blocking`` itself.
        """
        d: Deferred[T] = self.node.run_blocking(fn, *args)
        d.addErrback(_not_directory_is_missing)
        return d


def query_text(request: Request, name: bytes) -> str | None:
    """
    A query argument as text (``+`` and ``%XX`` decoded, UTF-8 with
    undecodable bytes kept as surrogate escapes), or ``None``.
    """
    value = query_arg(request, name)
    return None if value is None else value.decode("utf-8", "surrogateescape")


def required_file(request: Request) -> str:
    """
    The ``file`` argument, which must be given and non-empty.
    """
    path = query_text(request, b"file")
    if not path:
        raise BadRequest(FILE_REQUIRED)
    return path


def _not_directory_is_missing(failure: Failure) -> Failure:
    error = failure.check(NotDirectory)
    if error is not None:
        raise NotFound(failure.value.path)
    return failure


def _typed(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], empty: Any,
           default: Any) -> Any:
    if name not in body:
        return default
    value = body[name]
    if value is None:
        return empty
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise BadRequest(GENERIC_MESSAGE)
    if not isinstance(value, kinds):
        raise BadRequest(GENERIC_MESSAGE)
    return value


def text_field(body: dict[str, Any], name: str, default: str = "") -> str:
    """
    A string field (``null`` → ``""``).
    """
    value: str = _typed(body, name, str, "", default)
    return value


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """
    A boolean field (``null`` → false).
    """
    value: bool = _typed(body, name, bool, False, default)
    return value


def int_field(body: dict[str, Any], name: str, default: int | None = None) -> int | None:
    """
    An integer field (a whole JSON number; booleans refused); ``None`` when
    absent or null.
    """
    value = _typed(body, name, (int, float), None, default)
    if value is None:
        return None
    if isinstance(value, float) and not value.is_integer():
        raise BadRequest(GENERIC_MESSAGE)
    return int(value)


def list_field(body: dict[str, Any], name: str) -> list[Any]:
    """
    An array field (``null`` or absent → ``[]``).
    """
    value: list[Any] = _typed(body, name, list, [], [])
    return value


def text_items(values: list[Any]) -> list[str]:
    """
    An array that must hold only strings.
    """
    if not all(isinstance(v, str) for v in values):
        raise BadRequest(GENERIC_MESSAGE)
    return values


def join_rooted(root: str, name: str) -> str:
    """
    ``root`` and ``name`` joined as rooted paths, so surplus ``..`` clamps at
    the volume root (api.md §2.11 for the root+item routes).
    """
    return "/" + root.strip("/") + "/" + name
