"""
The request class of the API site: what every request goes through before
any resource sees it (api.md §2.2 stages 1–2), and the header-time hook that
lets upload bodies stream into a parser instead of ``request.content``.

* A fresh UUIDv4 ``X-Request-Id`` on every response (§2.3).
* CORS headers on every response, errors included; ``OPTIONS`` is answered
  204 at once without authentication, whatever the path (§2.4).  The panel
  URL and ``allowed_origins`` are re-read from the live configuration on
  every request (project).
* A single trailing ``/`` is ignored instead of redirecting (§2.7.3).
* Twisted's form parsing is off (``parsePOSTFormSubmission=False``), and
  ``gotLength`` hands the body of routes registered as *body sinks* in the
  site's ``body_sinks`` table (``POST /upload/file``, put there by whoever
  mounts the subtree: a ``Subtree``) to an object that parses it as it
  arrives (downloads-uploads.md §7.3).
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol, cast

from twisted.internet import tcp
from twisted.internet.interfaces import ITCPTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

if TYPE_CHECKING:
    from ..node import Node

STREAM_READ_SIZE = 128 * 1024
CORS_METHODS = b"GET, POST, PATCH, PUT, DELETE, OPTIONS"
CORS_HEADERS = (b"Accept, Accept-Encoding, Authorization, Cache-Control, Content-Type, "
                b"Content-Length, Origin, X-Real-IP, X-CSRF-Token")


class BodySink(Protocol):
    """
    What replaces ``request.content`` for a streamed body.  ``write`` is fed
    each chunk; ``seek``/``tell``/``read`` satisfy ``requestReceived``;
    ``close`` is called when the request ends or the connection is lost.
    """

    def write(self, data: bytes) -> None: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...

    def tell(self) -> int: ...

    def read(self, size: int = -1) -> bytes: ...

    def close(self) -> None: ...


SinkFactory = Callable[["ApiRequest", bytes, Optional[int]], Optional[BodySink]]
BodySinks = dict[tuple[bytes, bytes], SinkFactory]


class Subtree(NamedTuple):
    """
    A resource to mount and the body sinks of its routes, keyed by method and
    path relative to where it is mounted (``(b"POST", b"file")``).
    """

    resource: Resource
    body_sinks: BodySinks


def pending_request_line(request: Request) -> tuple[bytes, bytes] | None:
    """
    The method and URI of a request whose headers are complete but whose body
    has not been received yet.

    Twisted only copies them onto the request in ``requestReceived``; until
    then they live on the channel as private attributes.  This is the one place
    that reads them, and ``tests/test_request.py`` pins the behaviour.
    """
    channel = request.channel
    command = getattr(channel, "_command", None)
    path = getattr(channel, "_path", None)
    if not isinstance(command, bytes) or not isinstance(path, bytes):
        return None
    return command, path


def query_arg(request: Request, name: bytes) -> bytes | None:
    """
    The first value of query argument ``name``, if any.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name)
    return values[0] if values else None


def transport_of(request: Request) -> ITCPTransport:
    """
    The connection a request arrived on (a TCP or UNIX stream transport).
    """
    transport = getattr(request.channel, "transport", None)
    if transport is None:
        raise RuntimeError("the request's connection is gone")
    return cast(ITCPTransport, transport)


def abort_connection(request: Request) -> None:
    """
    Drop the request's connection at once (a body that can no longer be
    sent correctly): the only honest signal once the headers are gone.
    """
    if getattr(request.channel, "transport", None) is not None:
        transport_of(request).abortConnection()


def strip_slash(value: str) -> str:
    """
    A configured origin with one trailing ``/`` removed (api.md §2.4, project).
    """
    return value[:-1] if value.endswith("/") else value


def allowed_origin(remote: str, allowed: list[str], origin: bytes | None) -> tuple[str, bool]:
    """
    The ``Access-Control-Allow-Origin`` value for a request's ``Origin``
    (api.md §2.4) and whether it depends on that origin (for ``Vary``).
    """
    panel = strip_slash(remote)
    if origin is None:
        return panel, bool(allowed)
    sent = origin.decode("latin-1")
    if sent == panel:
        return panel, True
    for entry in allowed:
        entry = strip_slash(entry)
        if entry == "*":
            return "*", True
        if entry == sent:
            return entry, True
    return panel, True


def client_ip(request: Request, trusted_proxies: list[str]) -> str:
    """
    The client's address: the TCP peer, unless the peer is a trusted proxy, in
    which case ``X-Forwarded-For`` (first entry), then ``X-Real-IP`` (api.md
    §2.16).
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", "") or ""
    if trusted_proxies and _is_trusted(host, trusted_proxies):
        forwarded = request.getHeader(b"X-Forwarded-For")
        if forwarded:
            first = forwarded.decode("latin-1").split(",")[0].strip()
            if first:
                return first
        real = request.getHeader(b"X-Real-IP")
        if real:
            return real.decode("latin-1").strip()
    return host


def _is_trusted(host: str, trusted: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


class ApiRequest(Request):
    """
    The request of the API site; see the module docstring.
    """

    # No text/html default: bodiless answers (204, the upload 200) carry no
    # Content-Type, and every JSON answer sets its own.
    defaultContentType = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)
        self.request_id = str(uuid.uuid4())
        self.gone = False
        self.extra_cors_headers: bytes = b""

    @property
    def node(self) -> "Node":
        """
        The shared daemon state of the site this request arrived on.
        """
        node: Node = cast(Any, self.channel).site.node
        return node

    def gotLength(self, length: int | None) -> None:
        """
        Once the headers are in: let a registered body sink take the body.
        """
        line = pending_request_line(self)
        factory: SinkFactory | None = None
        if line is not None:
            method, uri = line
            path = uri.split(b"?", 1)[0]
            if path.endswith(b"/") and len(path) > 1:
                path = path[:-1]
            factory = cast(Any, self.channel).site.body_sinks.get((method, path))
        sink = factory(self, uri, length) if factory is not None else None
        if sink is None:
            super().gotLength(length)
            return
        self.content = sink  # type: ignore[assignment]  # a file-like sink, see BodySink
        transport: object = self.channel.transport
        if isinstance(transport, tcp.Connection):
            # Streamed bodies are large: read them in bigger pieces (fewer
            # trips through the HTTP channel per GiB).  tcp.Connection.doRead
            # reads up to bufferSize bytes; this connection answers with a
            # small body, so the larger write threshold does not matter.
            transport.bufferSize = STREAM_READ_SIZE

    def connectionLost(self, reason: Any) -> None:
        """
        Remember that the client went away, then let Twisted clean up.
        """
        self.gone = True
        super().connectionLost(reason)

    def client_ip(self) -> str:
        """
        The client address after trusted-proxy handling.
        """
        return client_ip(self, list(self.node.config.api.trusted_proxies))

    def set_common_headers(self) -> None:
        """
        ``X-Request-Id`` and the CORS set (api.md §2.3–§2.4).
        """
        config = self.node.config
        self.setHeader(b"X-Request-Id", self.request_id.encode("ascii"))
        origins = self.requestHeaders.getRawHeaders(b"Origin")
        value, varies = allowed_origin(config.remote, list(config.allowed_origins),
                                       origins[0] if origins else None)
        self.setHeader(b"Access-Control-Allow-Origin", value.encode("utf-8", "replace"))
        if varies:
            self.setHeader(b"Vary", b"Origin")
        self.setHeader(b"Access-Control-Allow-Credentials", b"true")
        self.setHeader(b"Access-Control-Allow-Methods", CORS_METHODS)
        self.setHeader(b"Access-Control-Allow-Headers", CORS_HEADERS + self.extra_cors_headers)
        self.setHeader(b"Access-Control-Max-Age", b"7200")
        if config.allow_cors_private_network:
            self.setHeader(b"Access-Control-Allow-Private-Network", b"true")
            self.setHeader(b"Access-Control-Request-Private-Network", b"true")

    def process(self) -> None:
        """
        Stages 1–2 of api.md §2.2, then normal resource traversal.
        """
        path = self.path
        if path.startswith(b"/download/"):
            # Browsers only preflight non-simple Range values; allow them.
            self.extra_cors_headers = b", Range, If-Range"
        self.set_common_headers()
        if self.method == b"OPTIONS":
            self.setResponseCode(204)
            self.finish()
            return
        if len(path) > 1 and path.endswith(b"/"):
            self.path = path[:-1]
        super().process()
