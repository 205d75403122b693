"""
The JSON error envelope, the error-to-status mapping, and the one render
adapter every resource goes through.

Wire format (api.md §2.7.1)::

    {"error": "Human readable message.", "request_id": "<X-Request-Id>"}

``request_id`` is always included (a project decision; upstream only adds it
on some paths).  Messages are upstream's texts, typos included, because users
and scripts match on them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine, Mapping

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.http import RESPONSES
from twisted.web.server import NOT_DONE_YET, Request

from .. import fs
from ..servers.occupancy import WriteGuarded
from .request import ApiRequest, abort_connection, transport_of

log = Logger()

#: ``NOT_DONE_YET`` with its type (Twisted's constant is untyped).
NOT_DONE: int = NOT_DONE_YET
GENERIC_MESSAGE = "An unexpected error was encountered while processing this request"
NOT_FOUND_ON_SERVER = "The requested resource was not found on this server."
DOES_NOT_EXIST = "The requested resource does not exist on this instance."


class ApiError(Exception):
    """
    An error with a known HTTP status and a message shown to the user.
    """

    status = 500
    message = GENERIC_MESSAGE

    def __init__(self, message: str | None = None, *, status: int | None = None,
                 headers: Mapping[bytes, bytes] | None = None) -> None:
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequest(ApiError):
    """
    400: the request could not be used as sent.
    """

    status = 400


class Unauthorized(ApiError):
    """
    401: no usable ``Authorization`` header (api.md §2.5 step 3).
    """

    status = 401
    message = "The required authorization heads were not present in the request."

    def __init__(self) -> None:
        super().__init__(headers={b"WWW-Authenticate": b"Bearer"})


class Forbidden(ApiError):
    """
    403: credentials present but refused.
    """

    status = 403
    message = "You are not authorized to access this endpoint."


class InvalidTokenError(Forbidden):
    """
    403 for a signed-URL token that fails verification (api.md §2.6, project).
    """

    message = "The provided token is invalid or has expired."


class NotFound(ApiError):
    """
    404 with the "does not exist on this instance" text (unknown route/server).
    """

    status = 404
    message = DOES_NOT_EXIST


class Conflict(ApiError):
    """
    409.
    """

    status = 409


class MethodNotAllowed(ApiError):
    """
    405 with an ``Allow`` header listing what the route accepts.
    """

    status = 405
    message = "The requested method is not allowed for this resource."

    def __init__(self, allowed: list[bytes]) -> None:
        super().__init__(headers={b"Allow": b", ".join(allowed)})


# The generic mapping of filesystem failures, api.md §2.7.2.
_FS_ERRORS: list[tuple[type[Exception], int, str]] = [
    (fs.Denied, 403, "This file cannot be modified: present in egg denylist."),
    (fs.NotFound, 404, "The requested resources was not found on the system."),
    (fs.IsDirectory, 400, "Cannot perform that action: file is a directory."),
    (fs.NotDirectory, 400, "Cannot perform that action: a path component is not a directory."),
    (fs.QuotaExceeded, 400, "There is not enough disk space available to perform that action."),
    (fs.NameTooLong, 400, "Cannot perform that action: file name is too long."),
    (fs.SpecialFile, 400, "Cannot open files of this type."),
    # [project] The node's own disk is full (ENOSPC/EDQUOT): 507 Insufficient Storage, a
    # node-level failure the user can read, instead of a generic 500.
    (fs.NoSpace, 507, "The node's disk is full: the file could not be written."),
]


def to_api_error(exc: BaseException) -> ApiError | None:
    """
    Translate a domain exception into the ApiError the client sees, or
    ``None`` for an unexpected failure (which becomes a logged 500).
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, WriteGuarded):
        return Conflict(str(exc))
    for kind, status, message in _FS_ERRORS:
        if isinstance(exc, kind):
            return ApiError(message, status=status)
    return None


def request_id(request: Request) -> str:
    """
    The id assigned to ``request`` by the site (``X-Request-Id``).
    """
    return getattr(request, "request_id", "")


def write_json(request: Request, status: int, body: Any) -> bytes:
    """
    Set status and JSON headers on ``request``; return the encoded body.
    """
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    return data


def error_body(request: Request, error: ApiError) -> bytes:
    """
    Prepare ``request`` for the envelope of ``error`` and return the body.
    """
    for name, value in error.headers.items():
        request.setHeader(name, value)
    return write_json(request, error.status,
                      {"error": error.message, "request_id": request_id(request)})


def answer_and_close(request: ApiRequest, error: ApiError | None) -> None:
    """
    Answer ``request`` before its body has been read (the error envelope of ``error``, or an
    empty 200 for ``None``), straight onto its connection, and close the connection: the way to
    answer a streamed body that will not be read to its end (downloads-uploads.md §7.3,
    transfers.md §4.7 step 7).
    """
    request.set_common_headers()
    status = 200 if error is None else error.status
    body = b"" if error is None else json.dumps(
        {"error": error.message, "request_id": request_id(request)},
        separators=(",", ":")).encode("utf-8")
    lines = [b"HTTP/1.1 %d %s" % (status, RESPONSES.get(status, b"Error"))]
    for name, values in request.responseHeaders.getAllRawHeaders():
        for value in values:
            lines.append(name + b": " + value)
    if error is not None:
        for name, value in error.headers.items():
            lines.append(name + b": " + value)
        lines.append(b"Content-Type: application/json; charset=utf-8")
    lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
    transport = transport_of(request)
    transport.write(b"\r\n".join(lines) + body)
    transport.loseConnection()


def render_failure(request: Request, failure: Failure) -> None:
    """
    Finish ``request`` with the envelope for ``failure`` (500 when unknown).
    """
    error = to_api_error(failure.value)
    if error is None:
        log.failure("Unhandled error in request {method} {path} ({request_id})",
                    failure, method=request.method, path=request.path,
                    request_id=request_id(request))
        error = ApiError()
    if request.finished or getattr(request, "gone", False):
        return
    if request.startedWriting:
        # Headers are gone; the only honest signal left is a broken connection.
        abort_connection(request)
        return
    body = error_body(request, error)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def render_async(request: Request, handler: Callable[[], Any]) -> int | bytes:
    """
    Run ``handler`` (returning a value, a Deferred or a coroutine) and render
    its outcome: ``None`` → empty body, ``bytes`` → written as is, anything
    else → JSON.  The handler may set the status itself first.  Errors become
    envelopes.  A client that goes away cancels the work.
    """
    try:
        result = handler()
    except Exception:
        render_failure(request, Failure())
        return NOT_DONE_YET
    if isinstance(result, Coroutine):
        d: Deferred[Any] = ensureDeferred(result)
    elif isinstance(result, Deferred):
        d = result
    else:
        return _render_value(request, result, finish=False)

    finished = request.notifyFinish()
    finished.addErrback(lambda _: d.cancel())

    def done(value: Any) -> None:
        if request.finished or getattr(request, "gone", False):
            return
        _render_value(request, value, finish=True)

    def failed(failure: Failure) -> None:
        if failure.check(CancelledError) and getattr(request, "gone", False):
            return
        render_failure(request, failure)

    d.addCallbacks(done, failed)
    d.addErrback(lambda f: log.failure("Rendering a response failed", f))
    return NOT_DONE_YET


def _render_value(request: Request, value: Any, *, finish: bool) -> int | bytes:
    """
    Render a handler's plain value; finish the request when asynchronous.
    """
    if value is NOT_DONE_YET:
        return NOT_DONE
    if value is None:
        body = b""
        if request.code == 200:
            request.setResponseCode(204)
    elif isinstance(value, bytes):
        body = value
    else:
        body = write_json(request, request.code, value)
    if not finish:
        return body
    if request.code not in (204, 304) and not request.responseHeaders.hasHeader(
            b"Content-Length"):
        # A known length, never a chunked body for a value we hold whole.
        request.setHeader(b"Content-Length", b"%d" % len(body))
    if body and request.method != b"HEAD":
        request.write(body)
    request.finish()
    return NOT_DONE_YET


class ErrorResource(Resource):
    """
    A leaf that answers every method with one error envelope (unknown routes,
    failed authentication during traversal).
    """

    isLeaf = True

    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self._error = error

    def render(self, request: Request) -> bytes:
        """
        The envelope, whatever the method.
        """
        return error_body(request, self._error)


class JsonResource(Resource):
    """
    Base of every API resource: unknown children are a JSON 404 and methods
    without a ``render_<METHOD>`` a JSON 405 (api.md §2.7.3).  Twisted's
    implicit HEAD-as-GET is not used: a route answers HEAD only if it says so.

    Every ``render_<METHOD>`` goes through ``render_async``: a handler is a
    plain function or ``async def`` that returns a value (``None`` → 204 or
    an empty body, ``bytes``, or anything JSON-encodable), sets the status
    first if it is not 200, and raises ``ApiError`` (or a domain error that
    ``to_api_error`` maps) to fail.  A client that goes away cancels it.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        No such child: JSON 404.
        """
        return ErrorResource(NotFound())

    def render(self, request: Request) -> int | bytes:
        """
        Dispatch to ``render_<METHOD>`` or answer 405.
        """
        method = request.method.decode("ascii", "replace")
        allowed = self.allowed_methods()
        if method.encode("ascii", "replace") not in allowed:
            if not allowed:
                return error_body(request, NotFound())
            return error_body(request, MethodNotAllowed(sorted(allowed)))
        handler = getattr(self, "render_" + method)
        return render_async(request, lambda: handler(request))

    def allowed_methods(self) -> set[bytes]:
        """
        The methods this resource defines a ``render_<METHOD>`` for.
        ``Resource``'s own ``render_HEAD`` (HEAD answered by running GET)
        does not count.
        """
        allowed = set()
        for name in dir(self):
            if not name.startswith("render_") or not name[7:].isupper():
                continue
            if name == "render_HEAD" and getattr(type(self), name) is Resource.render_HEAD:
                continue
            allowed.add(name[7:].encode("ascii"))
        return allowed
