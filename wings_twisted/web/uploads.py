"""
``POST /upload/file``: browser uploads streamed into the volume while they
arrive (downloads-uploads.md §6–§7, api.md §7.4).

How a request flows:

1. ``ApiRequest.gotLength`` (all headers in, no body byte read yet) builds an
   ``UploadSink`` for this route.  The sink checks the token (403/404, the
   ``unique_id`` is consumed now), the write guard (409) and the content type
   (400) at once.  A failed check switches the sink to *discarding*: the body
   is drained unparsed and the error answered when it ends, or, past 64 MiB
   of drained body, answered at once and the connection closed.
2. Each body chunk goes into ``multipart.PushMultipartParser``.  For every
   part named ``files`` that has a file name, the sink queues blocking jobs
   for a worker thread: ``begin`` (sandboxed ``Volume.begin_write``: denylist,
   directory creation, a ``.upload-*.part`` temporary file beside the
   destination), ``write`` (consecutive chunks coalesced into one job),
   ``commit`` (write guard again, mode, chown, rename into place) or ``abort``.
   Jobs run one at a time, in order.  While more than ``HIGH_WATER`` bytes wait
   for the disk the transport is paused; it resumes below ``LOW_WATER``, so
   memory stays bounded whatever the upload's size.
3. The per-file ``api.upload_limit`` is enforced as bytes arrive; the quota by
   the volume on every write.  Any failure aborts the current part (temporary
   file and the directories made for it removed) and stops further parts;
   parts that completed earlier stay.  A client that disconnects has its
   current part aborted the same way.
4. When the body has ended, ``render_POST`` waits for the job queue and
   answers 200 with an empty body, or the first error's envelope.

File names (§6.2) are read from the part's raw ``Content-Disposition``:
``filename*`` (RFC 8187) wins over ``filename``; a quoted ``filename`` has its
backslash escapes removed but percent sequences are kept literally (the
multipart library would decode ``%22``; upstream does not).
"""

from __future__ import annotations

import collections
import json
import urllib.parse
from typing import Any, Callable

from multipart import MultipartError, MultipartSegment, PushMultipartParser
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.resource import Resource

from ..auth import UPLOAD
from ..servers.server import Server
from .errors import ApiError, BadRequest, JsonResource, render_async, to_api_error
from .signed import consume_token, verify_signed_token

log = Logger()

MIB = 1024 * 1024
# Body bytes waiting for the disk: past HIGH_WATER the socket is paused,
# below LOW_WATER it resumes.  Small on purpose: these buffers are most of
# an upload's memory.
HIGH_WATER = 3 * MIB
LOW_WATER = 1 * MIB
# A write job starts once this much is queued for the part (or the part
# ended), and takes at most JOB_MAX: fewer, larger writev calls from the
# worker thread, each one GIL hand-off.
JOB_MIN = 1 * MIB
JOB_MAX = 2 * MIB
DISCARD_LIMIT = 64 * MIB

FORM_ERROR = "Failed to get multipart form data from request."
NO_FILES = "No files were found on the request body."
INVALID_NAME = "Invalid file name."


def parse_disposition(value: str) -> dict[str, str]:
    """
    The parameters of a ``Content-Disposition`` value, names lower-cased.
    Quoted strings lose their quotes and backslash escapes; nothing else is
    decoded.
    """
    params: dict[str, str] = {}
    i, n = value.find(";"), len(value)
    if i < 0:
        return params
    while i < n:
        i += 1
        while i < n and value[i] in " \t":
            i += 1
        start = i
        while i < n and value[i] not in "=;":
            i += 1
        name = value[start:i].strip().lower()
        if i >= n or value[i] == ";":
            continue
        i += 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1
            param = "".join(chars)
            while i < n and value[i] != ";":
                i += 1
        else:
            start = i
            while i < n and value[i] != ";":
                i += 1
            param = value[start:i].strip()
        if name and name not in params:
            params[name] = param
    return params


def _latin1_to_text(value: str) -> str:
    """
    Header text was decoded as latin-1 (one char per byte); reinterpret the
    bytes as UTF-8, keeping undecodable bytes as surrogate escapes.
    """
    return value.encode("latin-1", "replace").decode("utf-8", "surrogateescape")


def part_file(segment: MultipartSegment) -> tuple[str | None, str | None]:
    """
    A form part's field name and raw file name (``None`` when it has none),
    from one parse of its ``Content-Disposition`` (§6.2 step 1).
    """
    disposition = segment.header("Content-Disposition")
    if disposition is None:
        return None, None
    params = parse_disposition(disposition)
    name = params.get("name")
    extended = params.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return name, urllib.parse.unquote(encoded, encoding=charset or "utf-8",
                                              errors="surrogateescape")
        except LookupError:
            return name, urllib.parse.unquote(encoded, errors="surrogateescape")
    filename = params.get("filename")
    return name, None if filename is None else _latin1_to_text(filename)


def base_name(filename: str) -> str:
    """
    §6.2 step 2: trailing ``/`` stripped, then what follows the last ``/``.
    """
    return filename.rstrip("/").rsplit("/", 1)[-1]


def valid_name(name: str) -> bool:
    """
    §6.2 step 3.
    """
    if name in ("", ".", "..") or "\x00" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= 255


def clean_directory(directory: str) -> str:
    """
    The directory as recorded in the activity log: a lexical POSIX clean like
    Go's ``path.Clean`` (§6.5).
    """
    rooted = directory.startswith("/")
    parts: list[str] = []
    for part in directory.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    text = "/".join(parts)
    if rooted:
        return "/" + text
    return text or "."


def multipart_boundary(content_type: bytes | None) -> bytes | None:
    """
    The boundary of a ``multipart/form-data`` content type, else ``None``.
    """
    if not content_type:
        return None
    kind, _, rest = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return None
    for param in rest.split(b";"):
        key, _, value = param.strip().partition(b"=")
        if key.strip().lower() == b"boundary":
            value = value.strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            return value or None
    return None


class _Part:
    """
    One file part on its way into the volume.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 0
        self.writer: Any = None
        self.done = False


class UploadSink:
    """
    ``request.content`` for an upload; see the module docstring.
    """

    def __init__(self, node: Any, request: Any, uri: bytes, length: int | None) -> None:
        self._node = node
        self._request = request
        self._received = 0
        self._discarded = 0
        self.error: ApiError | None = None
        self._parser: PushMultipartParser | None = None
        self._part: _Part | None = None
        self._files = 0
        self._jobs: collections.deque[tuple[str, _Part, Any]] = collections.deque()
        self._queued = 0
        self._busy = False
        self._paused = False
        self._closed = False
        self._idle: list[Deferred[None]] = []
        self.server: Server | None = None
        self.claims: dict[str, Any] = {}
        # Taken now: once the client is gone the channel is too.
        self.client_ip = request.client_ip()
        # Decode percent escapes byte for byte, then read the bytes as UTF-8.
        query = urllib.parse.parse_qs(uri.partition(b"?")[2].decode("latin-1"),
                                      keep_blank_values=True, encoding="latin-1")
        self.directory = _latin1_to_text(query.get("directory", [""])[0])
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

    def _check_headers(self, token: bytes) -> None:
        node = self._node
        self.claims, self.server = verify_signed_token(node, token, UPLOAD)
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

    def write(self, data: bytes) -> None:
        """
        One chunk of the request body.
        """
        self._received += len(data)
        if self.error is not None or self._closed:
            self._discard(len(data))
            return
        assert self._parser is not None  # set whenever there is no error
        try:
            for event in self._parser.parse(data):
                if self.error is not None:
                    break
                self._event(event)
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
        if self._part is not None and not self._part.done:
            self._abort_part()
        self._resume()

    # parser events

    def _event(self, event: Any) -> None:
        if isinstance(event, MultipartSegment):
            self._start_part(event)
        elif event is None:
            if self._part is not None:
                part, self._part = self._part, None
                part.done = True
                self._queue("commit", part, None)
        elif self._part is not None:
            part = self._part
            part.size += len(event)
            if part.size > self.limit:
                raise BadRequest("File {} is larger than the maximum file upload size of {} MB."
                                 .format(part.name, self.limit_mib))
            self._queue("write", part, bytes(event))

    def _start_part(self, segment: MultipartSegment) -> None:
        field, filename = part_file(segment)
        if field != "files" or filename is None:
            return  # not a file: its bytes find no current part and are dropped
        name = base_name(filename)
        self._files += 1
        if not valid_name(name):
            raise BadRequest(INVALID_NAME)
        self._part = _Part(name)
        self._queue("begin", self._part, None)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > DISCARD_LIMIT and not self._closed:
            self._answer_now()

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error
        if self._part is not None:
            self._abort_part()

    def _abort_part(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        part.done = True
        # Drop its queued chunks; the abort job removes what begin created.
        self._drop_jobs(part)
        self._queue("abort", part, None)

    def _drop_jobs(self, part: _Part) -> None:
        """
        Forget every queued job of ``part``, and its bytes from the count.
        """
        self._queued -= sum(len(job[2]) for job in self._jobs if job[1] is part and job[0] == "write")
        self._jobs = collections.deque(job for job in self._jobs if job[1] is not part)

    # the job queue

    def _queue(self, kind: str, part: _Part, data: Any) -> None:
        if kind == "write":
            self._queued += len(data)
            if self._queued > HIGH_WATER and not self._paused and not self._closed:
                self._paused = True
                self._request.channel.transport.pauseProducing()
        self._jobs.append((kind, part, data))
        self._kick()

    def _kick(self) -> None:
        if self._busy:
            return
        if not self._jobs:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)
            return
        kind, part, data = self._jobs[0]
        size = 0
        if kind == "write":
            # Wait for a worthwhile batch unless the part (or the body) is over.
            if self._queued < JOB_MIN and not part.done and not self._closed and \
                    all(job[0] == "write" for job in self._jobs):
                return
            chunks = []
            while (self._jobs and self._jobs[0][0] == "write" and self._jobs[0][1] is part
                   and size < JOB_MAX):
                chunk = self._jobs.popleft()[2]
                chunks.append(chunk)
                size += len(chunk)
            data = chunks
        else:
            self._jobs.popleft()
        self._busy = True
        d = self._node.run_blocking(self._run_job, kind, part, data)
        d.addCallbacks(self._job_done, self._job_failed, callbackArgs=(kind, part, size),
                       errbackArgs=(kind, part, size))
        d.addErrback(lambda f: log.failure("Upload job bookkeeping failed", f))

    def _run_job(self, kind: str, part: _Part, data: Any) -> None:
        """
        Blocking half of a job (worker thread).
        """
        server = self.server
        assert server is not None  # jobs only exist once the token named a server
        if kind == "begin":
            part.writer = server.volume.begin_write(self.directory, part.name)
        elif kind == "write":
            if part.writer is not None:
                part.writer.write_many(data)
        elif kind == "commit":
            if part.writer is not None:
                server.check_writable()
                part.writer.commit()
        elif kind == "abort":
            if part.writer is not None:
                part.writer.abort()

    def _job_done(self, _: None, kind: str, part: _Part, size: int) -> None:
        self._busy = False
        self._queued -= size
        if kind == "commit" and part.writer is not None and self.server is not None:
            self._node.activity.record(
                "server:file.uploaded", server=self.server.uuid,
                user=self.claims.get("user_uuid"), ip=self.client_ip,
                metadata={"file": part.name, "directory": clean_directory(self.directory)})
        self._resume()
        self._kick()

    def _job_failed(self, failure: Failure, kind: str, part: _Part, size: int) -> None:
        self._busy = False
        self._queued -= size
        error = to_api_error(failure.value)
        if error is None:
            log.failure("Upload of {name} failed", failure, name=part.name)
            error = ApiError()
        if self.error is None:
            self.error = error
        if kind != "abort" and part.writer is not None:
            # Whatever failed, leave nothing behind for this part.
            self._drop_jobs(part)
            self._jobs.appendleft(("abort", part, None))
            if self._part is part:
                self._part = None
        self._resume()
        self._kick()

    def _resume(self) -> None:
        if self._paused and (self._queued < LOW_WATER or self._closed or self.error is not None):
            self._paused = False
            channel = self._request.channel
            if channel is not None and channel.transport is not None:
                channel.transport.resumeProducing()

    def _answer_now(self) -> None:
        """
        Too much body after a failure: answer without waiting and hang up.
        """
        self._closed = True
        request = self._request
        error = self.error or BadRequest(FORM_ERROR)
        request.set_common_headers()
        body = ('{"error":%s,"request_id":"%s"}' % (json.dumps(error.message), request.request_id)
                ).encode("utf-8")
        lines = [b"HTTP/1.1 %d %s" % (error.status, RESPONSES.get(error.status, b"Error"))]
        for name, values in request.responseHeaders.getAllRawHeaders():
            for value in values:
                lines.append(name + b": " + value)
        lines += [b"Content-Type: application/json; charset=utf-8",
                  b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        transport = request.channel.transport
        transport.write(b"\r\n".join(lines) + body)
        transport.loseConnection()

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
        if self._busy or self._jobs:
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d
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

    def __init__(self, node: Any) -> None:
        super().__init__()
        self._node = node

    def render_POST(self, request: Any) -> Any:
        """
        Answer once the streamed parts have been written.
        """
        sink = request.content
        if not isinstance(sink, UploadSink):  # pragma: no cover - wiring error
            raise RuntimeError("upload body was not streamed")
        return render_async(request, sink.result)


def upload_sink_factory(node: Any) -> Callable[[Any, bytes, int | None], UploadSink]:
    """
    The body-sink factory registered for ``POST /upload/file``.
    """

    def make(request: Any, uri: bytes, length: int | None) -> UploadSink:
        return UploadSink(node, request, uri, length)

    return make


def upload_tree(node: Any) -> Resource:
    """
    The ``/upload`` resource.
    """
    root = JsonResource()
    root.putChild(b"file", UploadResource(node))
    return root
