"""
A tiny S3 double for backup tests (panel.md §9.6), mounted at ``/s3``.

* ``PUT /s3/<bucket>/<key>?partNumber=N&uploadId=U`` stores a part of a
  multipart upload the Panel started (``GET /backups/{uuid}``); 404
  ``NoSuchUpload`` for an unknown upload id.  Answer ``200`` with
  ``ETag: "<md5 hex of the body>"``.
* ``PUT /s3/<bucket>/<key>`` without ``partNumber`` stores a whole object.
* ``GET /s3/<bucket>/<key>`` serves a stored object with
  ``Content-Type`` from ``state.s3.content_type`` (``application/x-gzip``;
  change it to test the restore's content-type check).

Signatures are not checked.  Requests are recorded in ``state.received``
(route ``/s3/{object}``, without their bodies) and consume scripted faults
like the Panel routes (``state.faults.add("PUT", "/s3/{object}", Respond(500))``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .faults import describe
from .replies import Reply
from .serving import record_request, serve

if TYPE_CHECKING:
    from .state import DevPanelState

ROUTE = "/s3/{object}"


def _s3_error(status: int, code: str, message: str) -> Reply:
    body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>".format(
        code, message
    )
    return Reply(status, body.encode("utf-8"), {"Content-Type": "application/xml"})


class S3Resource(Resource):
    """
    The S3 double: objects and multipart parts live in ``state.s3``.
    """

    isLeaf = True

    def __init__(self, state: DevPanelState, reactor: IReactorTime) -> None:
        super().__init__()
        self._state = state
        self._reactor = reactor

    def render(self, request: Request) -> int:
        """
        Record, apply a scripted fault, then store or serve.
        """
        key = "/".join(s.decode("utf-8", "replace") for s in request.postpath or [])
        method = request.method.decode("ascii", "replace").upper()
        record = record_request(self._state, request, self._reactor.seconds(), ROUTE, body=False)
        content = getattr(request, "content", None)
        body = content.read() if content is not None else b""
        fault = self._state.faults.pop(method, record.path, ROUTE)
        if fault is not None:
            record.fault = describe(fault)

        def normal() -> Reply:
            return self._handle(method, key, record.query, body)

        def done(status: int | None) -> None:
            record.status = status

        serve(request, self._reactor, fault, normal, done)
        return NOT_DONE_YET

    def _handle(self, method: str, key: str, query: dict[str, list[str]], body: bytes) -> Reply:
        store = self._state.s3
        if method == "PUT":
            etag = '"{}"'.format(hashlib.md5(body).hexdigest())
            if "partNumber" in query:
                upload = (key, (query.get("uploadId") or [""])[0])
                if upload not in store.parts:
                    return _s3_error(404, "NoSuchUpload", "The specified upload does not exist.")
                try:
                    number = int(query["partNumber"][0])
                except ValueError:
                    return _s3_error(400, "InvalidArgument", "Part number must be an integer.")
                store.parts[upload][number] = body
            else:
                store.objects[key] = body
            return Reply(200, b"", {"ETag": etag})
        if method in ("GET", "HEAD"):
            data = store.objects.get(key)
            if data is None:
                return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
            etag = '"{}"'.format(hashlib.md5(data).hexdigest())
            return Reply(200, data, {"Content-Type": store.content_type, "ETag": etag})
        return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
