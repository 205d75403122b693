"""
``POST /upload/file``: browser uploads streamed into the volume while they
arrive (downloads-uploads.md §6–§7, api.md §7.4).

How a request flows:

1. ``ApiRequest.gotLength`` (all headers in, no body byte read yet) builds an
   ``UploadSink`` for this route (``upload_tree`` hands the site its factory).
   The sink checks the token (403/404, the ``unique_id`` is consumed now), the
   write guard (409) and the content type (400) at once.  A failed check
   switches the sink to *discarding*: the body is drained unparsed and the
   error answered when it ends, or, past 64 MiB of drained body, answered at
   once and the connection closed.
2. Each body chunk goes into ``multipart.PushMultipartParser``.  Every part
   named ``files`` that has a file name becomes one file of the request's
   ``streams.spool.Spool``: ``begin`` (sandboxed ``Volume.begin_write``:
   denylist, directory creation, a ``.upload-*.part`` temporary file beside
   the destination), the part's bytes, then ``commit`` (write guard again,
   mode, chown, rename into place; then the activity record).  The spool
   writes on a worker thread, in order, and pauses the connection (registered
   on it as its producer) while too much waits for the disk, so memory stays
   bounded whatever the upload's size.
3. The per-file ``api.upload_limit`` is enforced here as bytes arrive, and
   ``api.upload_max_files`` file parts per request [project]; the quota by the
   volume on every write (bytes written so far are reserved against the
   limit until the part commits, so concurrent uploads cannot overrun it).  Any failure aborts the current part
   (temporary file and the directories made for it removed) and stops further
   parts; parts that completed earlier stay.  A client that disconnects has
   its current part aborted the same way (``close`` closes the spool).
4. When the body has ended, ``render_POST`` waits for the spool and answers
   200 with an empty body, or the first error's envelope.

The form details (boundary, ``Content-Disposition``, file-name rules) are in
``formdata``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable, cast

from multipart import MultipartError, MultipartSegment, PushMultipartParser
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import UPLOAD
from ..servers.server import Server
from ..streams.spool import Spool
from .channel import BodyProducer
from .errors import ApiError, BadRequest, JsonResource, answer_and_close, to_api_error
from .formdata import (base_name, clean_directory, latin1_to_text, multipart_boundary,
                       part_file, valid_name)
from ..node import Node
from .request import ApiRequest, Subtree, transport_of
from .signed import consume_token, verify_signed_token

log = Logger()

MIB = 1024 * 1024
DISCARD_LIMIT = 64 * MIB

FORM_ERROR = "Failed to get multipart form data from request."
NO_FILES = "No files were found on the request body."
INVALID_NAME = "Invalid file name."
TOO_MANY_FILES = "Too many files in one upload: at most {} are accepted per request."


class UploadSink:
    """
    ``request.content`` for an upload: parses the body as it arrives, checks
    each file part's name and size, and hands its bytes to a ``Spool`` that
    writes them into the volume; see the module docstring.
    """

    def __init__(self, node: Node, request: ApiRequest, uri: bytes, length: int | None) -> None:
        self._node = node
        self._request = request
        self._received = 0
        self._discarded = 0
        self.error: ApiError | None = None
        self._parser: PushMultipartParser | None = None
        self._spool: Spool | None = None
        self._spool_failure: Failure | None = None
        # The base name of the file part being streamed, and its size so far.
        self._part: str | None = None
        self._part_size = 0
        self._files = 0
        self._closed = False
        self.server: Server | None = None
        self.claims: dict[str, Any] = {}
        # Taken now: once the client is gone the channel is too.
        self.client_ip = request.client_ip()
        # Decode percent escapes byte for byte, then read the bytes as UTF-8.
        query = urllib.parse.parse_qs(uri.partition(b"?")[2].decode("latin-1"),
                                      keep_blank_values=True, encoding="latin-1")
        self.directory = latin1_to_text(query.get("directory", [""])[0])
        token = query.get("token", [""])[0].encode("latin-1")
        try:
            self._check_headers(token)
        except Exception as e:
            self.error = to_api_error(e)
            if self.error is None:
                # This runs inside Twisted's header parsing: a bug here must
                # turn into a 500 envelope, not a broken connection.
                log.failure("Checking an upload request failed")
                self.error = ApiError()
            return
        # Page-cache writes of 1-2 MiB cost less on the reactor thread than the hand-off to a
        # worker; a slow one (a disk that throttles writeback) sends the rest to the worker.
        self._spool = Spool(node.run_blocking, inline_writes=True)
        # The spool pauses the connection while the disk lags behind.
        # A TCP transport is a push producer (it pauses its reads).
        # Through BodyProducer: the channel's idle timeout waits while we pause.
        self._spool.registerProducer(
            BodyProducer(cast(IPushProducer, transport_of(request)), request.channel), True)

    def _check_headers(self, token: bytes) -> None:
        node = self._node
        self.claims, self.server = verify_signed_token(node, token, UPLOAD, self._request)
        consume_token(node, self._request, self.claims, is_range=False, resumable=False)
        self.server.check_writable()
        content_type = self._request.requestHeaders.getRawHeaders(b"Content-Type")
        boundary = multipart_boundary(content_type[0] if content_type else None)
        if boundary is None:
            raise BadRequest(FORM_ERROR)
        self._parser = PushMultipartParser(boundary, header_charset="latin-1",
                                           max_header_count=16)
        self.limit_mib = node.config.api.upload_limit
        self.limit = self.limit_mib * MIB
        self.max_files = node.config.api.upload_max_files

    # the file-like surface requestReceived and Request use

    def seek(self, offset: int, whence: int = 0) -> int:
        """
        Nothing to rewind: the body was consumed as it came.
        """
        return 0

    def tell(self) -> int:
        """
        Body bytes received so far.
        """
        return self._received

    def read(self, size: int = -1) -> bytes:
        """
        The body is not kept.
        """
        return b""

    def _current_failure(self) -> Failure | None:
        return self._spool.failure if self._spool is not None else None

    def write(self, data: bytes) -> None:
        """
        One chunk of the request body.
        """
        self._received += len(data)
        if self.error is not None or self._closed:
            self._discard(len(data))
            return
        spool, parser = self._spool, self._parser
        assert spool is not None and parser is not None  # set whenever there is no error
        failure = spool.failure
        if failure is not None:
            self._spool_failed(failure)
            self._discard(len(data))
            return
        try:
            for event in parser.parse(data):
                self._event(event)
                # A job may have failed at once (an inline worker in tests).
                failure = self._current_failure()
                if failure is not None:
                    self._spool_failed(failure)
                    break
        except MultipartError:
            self._fail(BadRequest(FORM_ERROR))
        except ApiError as e:
            self._fail(e)
        except Exception:
            log.failure("Parsing an upload body failed")
            self._fail(ApiError())

    def close(self) -> None:
        """
        The request ended or the connection was lost: abort what is unfinished.
        """
        if self._closed:
            return
        self._closed = True
        if self._spool is not None:
            self._spool.close()

    # parser events

    def _event(self, event: Any) -> None:
        spool = self._spool
        assert spool is not None
        if isinstance(event, MultipartSegment):
            self._start_part(spool, event)
        elif event is None:
            if self._part is not None:
                self._end_part(spool, self._part)
        elif self._part is not None:
            # A slice of the body the parser made: the spool keeps it as is.
            self._part_size += len(event)
            if self._part_size > self.limit:
                raise BadRequest("File {} is larger than the maximum file upload size of {} MB."
                                 .format(self._part, self.limit_mib))
            spool.write(event)

    def _start_part(self, spool: Spool, segment: MultipartSegment) -> None:
        field, filename = part_file(segment)
        if field != "files" or filename is None:
            return  # not a file: its bytes find no current part and are dropped
        name = base_name(filename)
        self._files += 1
        if self._files > self.max_files:
            raise BadRequest(TOO_MANY_FILES.format(self.max_files))
        if not valid_name(name):
            raise BadRequest(INVALID_NAME)
        self._part = name
        self._part_size = 0
        assert self.server is not None
        volume, directory = self.server.volume, self.directory
        spool.begin(lambda: volume.begin_write(directory, name))

    def _end_part(self, spool: Spool, name: str) -> None:
        self._part = None
        server = self.server
        assert server is not None
        spool.commit(check=server.check_writable, then=lambda: self._record(server, name))

    def _record(self, server: Server, name: str) -> None:
        """
        Activity record of a file written (§6.7).
        """
        self._node.activity.record(
            "server:file.uploaded", server=server.uuid, user=self.claims.get("user_uuid"),
            ip=self.client_ip,
            metadata={"file": name, "directory": clean_directory(self.directory)})

    # failures

    def _fail(self, error: ApiError) -> None:
        """
        Remember the first error, give up the current part and stop applying
        back-pressure: the rest of the body is drained unparsed.
        """
        if self.error is None:
            self.error = error
        self._part = None
        if self._spool is not None:
            self._spool.abort()
            self._spool.unregisterProducer()

    def _spool_failed(self, failure: Failure) -> None:
        """
        A disk job failed (the spool already aborted its file).
        """
        if self._spool_failure is failure:
            return
        self._spool_failure = failure
        error = to_api_error(failure.value)
        if error is None:
            log.failure("Upload into {directory!r} failed", failure, directory=self.directory)
            error = ApiError()
        self._fail(error)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > DISCARD_LIMIT and not self._closed:
            self._answer_now()

    def _answer_now(self) -> None:
        """
        Too much body after a failure: answer without waiting and hang up.
        """
        self._closed = True
        answer_and_close(self._request, self.error or BadRequest(FORM_ERROR))

    async def result(self) -> bytes:
        """
        Called once the whole body is in: wait for the disk work, then the
        answer (empty 200) or the first error.
        """
        if self.error is None and self._parser is not None:
            try:
                self._parser.close()
            except MultipartError:
                self._fail(BadRequest(FORM_ERROR))
        spool = self._spool
        if spool is not None:
            spool.unregisterProducer()  # the body is in: nothing left to pause
            try:
                await spool.flush()
            except Exception:
                pass  # the spool's failure, handled below
            if spool.failure is not None:
                self._spool_failed(spool.failure)
        if self.error is not None:
            raise self.error
        if self._files == 0:
            raise BadRequest(NO_FILES)
        return b""


class UploadResource(JsonResource):
    """
    ``/upload/file``; the work happens in the ``UploadSink`` the request
    factory installed.
    """

    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    async def render_POST(self, request: ApiRequest) -> bytes:
        """
        Answer once the streamed parts have been written.
        """
        sink: object = request.content
        if not isinstance(sink, UploadSink):  # pragma: no cover - wiring error
            raise RuntimeError("upload body was not streamed")
        return await sink.result()


def upload_sink_factory(node: Node) -> Callable[[ApiRequest, bytes, int | None], UploadSink]:
    """
    The body-sink factory of ``POST /upload/file``.
    """

    def make(request: ApiRequest, uri: bytes, length: int | None) -> UploadSink:
        return UploadSink(node, request, uri, length)

    return make


def upload_tree(node: Node) -> Subtree:
    """
    The ``/upload`` resource, and the body sink its ``file`` route needs.
    """
    root = JsonResource()
    root.putChild(b"file", UploadResource(node))
    return Subtree(root, {(b"POST", b"file"): upload_sink_factory(node)})
