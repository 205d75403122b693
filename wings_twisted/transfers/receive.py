"""
The destination side of a transfer (transfers.md §4): registering the incoming server, the body
read as it arrives, verification, the report to the panel, and the clean-up of a failure.

One `IncomingTransfer` per ``POST /api/transfers``, created once the token was verified
(``token``).  The web layer feeds it the request body (``data``) and answers the source with its
``outcome`` (status and message; 200 with an empty body on success).

Registration (§4.2), before any body byte is read: a second transfer of the same server is 409; a
server already registered here is 409 when it runs or is busy, or is dropped (environment and
volume removed: the stale copy of an earlier transfer) when it is offline and idle; the
configuration is fetched from the panel (failure: ``transfer/failure`` reported, 502); the server
is built, marked *receiving* (the write guard of api.md §2.9 refuses file changes) and registered.
Nothing is persisted.

Body (§4.3): ``Content-Type`` must be ``multipart/*`` with a boundary (else 400); the parts are
read by ``parts.PartReader`` (order, hash, checksums) as they arrive, the archive part's bytes
handed to the extraction (``extraction``).  Up to 64 KiB after the closing delimiter are ignored,
past that reading stops (the transfer goes on).  A body that ends or a connection that drops
before the closing delimiter is a failure.

Completion (§4.5–§4.6): once the extraction has finished, the environment is created and
``transfer/success`` reported; the panel's answer decides:

* 2xx: *receiving* cleared, ``transfer status`` ``success``, the configuration refreshed in the
  background (allocations changed), 200 to the source;
* 4xx: the panel did not take it: clean-up as a failure, without a failure report, 409;
* no answer (network, 5xx after retries): the outcome is unknown, so the server and its files are
  kept (*receiving* cleared), ``failure`` is published and an error logged for the operator, 502.

Failure (§4.7), whatever caused it (protocol, extraction, checksum, environment, cancellation,
deletion, a dropped connection): reading stops, the extraction is stopped and waited for,
``failure`` is published, the server is unregistered, its environment destroyed and its volume
removed (always), ``transfer/failure`` reported (409 = already resolved), and the source answered
with the error (400 protocol, 409 conflict or cancel, 500 internal, 502 panel, 507 disk full).

Phases (``IncomingTransfer.phase``) and what moves them; the first failure wins:

===============  ==========================================  ==================================
phase            entered when                                 left for
===============  ==========================================  ==================================
``registering``  the token was verified                       ``receiving``, ``failing``
``receiving``    registered: the body is read                 ``verifying``, ``failing``
``verifying``    closing delimiter: waiting for the extractor ``completing``, ``failing``
``completing``   checks passed: environment, panel report     ``succeeded``, ``kept``,
                                                              ``failing``
``failing``      a failure (clean-up running)                 ``failed``
===============  ==========================================  ==================================

Cancellation (``DELETE /api/transfers/{uuid}``, §4.8) is accepted in the first three phases;
once the success report is being made it is refused (409): the panel may already have moved the
server here.  A deletion of the server on this node fails the transfer the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..archive import ExtractStats
from ..environment import EnvironmentError as EnvError
from ..node import Node
from ..panel import PanelError
from ..servers import lifecycle
from ..servers.build import build_server
from ..servers.server import Server, ServerConfigError
from .extraction import INTERNAL, ArchiveSink, ExtractionFactory, failure_answer
from .framing import multipart_boundary
from .parts import BodyError, PartReader

__all__ = ["BodyReader", "IncomingTransfer", "Outcome", "Phase"]

log = Logger()

Phase = Literal["registering", "receiving", "verifying", "completing", "failing", "failed",
                "succeeded", "kept"]

#: Bytes after the closing delimiter ignored before reading stops.
EPILOGUE_LIMIT = 64 * 1024

IN_PROGRESS = "A transfer for this server is already in progress."
EXISTS = "This server already exists on this node."
FETCH_FAILED = "Could not fetch the server configuration from the panel."
BAD_CONTENT_TYPE = "Invalid content type, expected multipart/form-data."
TRUNCATED = "The transfer body ended before its closing delimiter."
LOST = "The connection to the source was lost."
CANCELLED = "The transfer was cancelled on the destination."
DELETED = "The server was deleted on the destination."
REJECTED = "The panel rejected the transfer completion."
UNKNOWN = "Could not report the transfer result to the panel."
ENVIRONMENT = "The server's environment could not be created."


class Outcome(NamedTuple):
    """
    The answer to the source: a status and an error message (``None``: empty body).
    """

    status: int
    message: str | None


class BodyReader(Protocol):
    """
    The connection the body arrives on, as the transfer sees it.
    """

    @property
    def producer(self) -> IPushProducer:
        """
        Pausable reading of the body (the extraction's back-pressure).
        """

    def stop(self) -> None:
        """
        Stop reading the body for good; later bytes are dropped.
        """


class IncomingTransfer:
    """
    One server being received; see the module docstring.

    :param forget: removes this transfer from the node's incoming registry.
    """

    def __init__(self, node: Node, uuid: str, content_type: bytes | None, *,
                 extraction: ExtractionFactory, forget: Callable[[], None]) -> None:
        self._node = node
        self.uuid = uuid
        self._boundary = multipart_boundary(content_type)
        self._make_extraction = extraction
        self._forget = forget
        self.phase: Phase = "registering"
        self.server: Server | None = None
        self._reader: BodyReader | None = None
        self._parts: PartReader | None = None
        self._extraction: ArchiveSink | None = None
        self._extracted: Deferred[ExtractStats] | None = None
        self._deletion: Deferred[None] | None = None
        #: Body bytes received (after registration).
        self.received = 0
        #: Fires once with the answer to the source.
        self.outcome: Deferred[Outcome] = Deferred()
        self.failure_reason = ""

    # -- registration (§4.2) -------------------------------------------------------------------

    async def register(self) -> bool:
        """
        Register the incoming server; ``False`` when the transfer ended instead (``outcome``
        has the answer).
        """
        node, uuid = self._node, self.uuid
        existing = node.registry.get(uuid)
        if existing is not None:
            if (existing.state != "offline" or existing.occupancy.state != "idle"
                    or existing.power_lock.held):
                self._refuse(409, EXISTS)
                return False
            log.warn("Server {uuid} is registered here, offline and idle, and is being "
                     "transferred to this node: dropping the stale copy", uuid=uuid)
            node.registry.remove(uuid)
            await lifecycle.delete(existing)
            await node.run_blocking(existing.volume.remove_root)
        try:
            document = await node.panel.get_server(uuid)
            server = build_server(node, uuid, document)
        except (PanelError, ServerConfigError) as e:
            log.error("Incoming transfer of {uuid}: fetching its configuration failed: {error}",
                      uuid=uuid, error=str(e))
            await self._report_failure()
            self._refuse(502, FETCH_FAILED)
            return False
        if not self._registering():
            return False  # cancelled meanwhile
        if uuid in node.registry:
            self._refuse(409, EXISTS)
            return False
        server.occupancy.begin_receive()
        node.registry.add(server)
        self.server = server
        try:
            await node.run_blocking(server.volume.ensure_root)
        except OSError as e:
            log.error("Incoming transfer of {uuid}: creating its volume failed: {error}",
                      uuid=uuid, error=str(e))
            self._fail(500, INTERNAL)
            return False
        if not self._registering():
            return False  # cancelled or deleted meanwhile
        # A deletion of the server cancels its tasks: it fails this transfer.
        self._deletion = Deferred(lambda _: self._fail(409, DELETED))
        self._deletion.addErrback(lambda _: None)
        server.tasks.add(self._deletion)
        self.phase = "receiving"
        log.info("Receiving server {uuid} from another node", uuid=uuid)
        if self._boundary is None:
            self._fail(400, BAD_CONTENT_TYPE)
            return False
        self._parts = PartReader(self._boundary, on_archive=self._archive,
                                 on_archive_end=self._archive_end)
        return True

    def _registering(self) -> bool:
        """
        Whether registration may go on (a cancel or a drop may have come while it waited).
        """
        return self.phase == "registering"

    def _refuse(self, status: int, message: str) -> None:
        self.phase = "failed"
        self._forget()
        self.outcome.callback(Outcome(status, message))

    # -- the body (§4.3) -----------------------------------------------------------------------

    def attach(self, reader: BodyReader) -> None:
        """
        The connection the body is read from.
        """
        self._reader = reader

    def data(self, chunk: bytes) -> None:
        """
        The next bytes of the body.
        """
        parts = self._parts
        if parts is None or self.phase not in ("receiving", "verifying", "completing"):
            return
        self.received += len(chunk)
        if parts.complete:
            parts.feed(chunk)
            if parts.epilogue > EPILOGUE_LIMIT and self._reader is not None:
                self._reader.stop()
            return
        try:
            complete = parts.feed(chunk)
        except BodyError as e:
            self._fail(e.status, e.message)
            return
        if complete and self.phase == "receiving":
            self.phase = "verifying"
            Deferred.fromCoroutine(self._complete()).addErrback(self._unexpected)

    def _archive(self) -> Callable[[bytes], None]:
        server, reader = self.server, self._reader
        assert server is not None and reader is not None
        extraction = self._make_extraction(server.volume, reader.producer,
                                           self._extraction_failed)
        self._extraction = extraction
        return extraction.write

    def _archive_end(self, digest: str) -> None:
        assert self._extraction is not None
        self._extracted = self._extraction.finish()
        # A failure is taken up here; _complete only waits for the result.
        self._extracted.addErrback(self._extraction_failed)

    def _extraction_failed(self, failure: Failure) -> None:
        if self.phase in ("receiving", "verifying"):
            status, message = failure_answer(failure)
            self._fail(status, message)

    def body_ended(self) -> None:
        """
        The request body ended (all of it was read).
        """
        if self.phase == "receiving":
            self._fail(400, TRUNCATED)

    def connection_lost(self) -> None:
        """
        The connection dropped: before the closing delimiter, the transfer failed.
        """
        if self.phase in ("registering", "receiving"):
            self._fail(400, LOST)

    @property
    def archive_bytes(self) -> int:
        """
        Bytes of the archive part received so far.
        """
        return self._parts.archive_bytes if self._parts is not None else 0

    # -- completion (§4.5, §4.6) ---------------------------------------------------------------

    async def _complete(self) -> None:
        extracted = self._extracted
        assert extracted is not None
        stats: ExtractStats | None = None

        def keep(value: ExtractStats) -> None:
            nonlocal stats
            stats = value

        extracted.addCallback(keep)
        await _settled(extracted)
        if self.phase != "verifying" or stats is None:
            return  # failed meanwhile (the extraction's failure, a cancel)
        server = self.server
        assert server is not None
        self.phase = "completing"
        log.info("Received server {uuid}: {files} files, {size} bytes of archive", uuid=self.uuid,
                 files=stats.files, size=self.archive_bytes)
        env = server.environment
        if env is not None:
            try:
                await env.create()
            except EnvError as e:
                log.error("Creating the environment of {uuid} failed: {error}", uuid=self.uuid,
                          error=str(e))
                self._fail(500, ENVIRONMENT)
                return
        try:
            await self._node.panel.report_transfer_success(self.uuid)
        except PanelError as e:
            if 400 <= e.status < 500:
                log.warn("The panel refused the completed transfer of {uuid}: {error}",
                         uuid=self.uuid, error=str(e))
                self._fail(409, REJECTED, report=False)
            else:
                self._keep(e)
            return
        self.phase = "succeeded"
        self._release()
        server.occupancy.finished()
        server.events.publish("transfer status", "success")
        log.info("Transfer of {uuid} to this node succeeded", uuid=self.uuid)
        server.track(_refresh, server)
        self.outcome.callback(Outcome(200, None))

    def _keep(self, error: PanelError) -> None:
        """
        The success report's fate is unknown: keep everything (§4.6).
        """
        server = self.server
        assert server is not None
        self.phase = "kept"
        self._release()
        server.occupancy.finished()
        server.events.publish("transfer status", "failure")
        log.error("Transfer of {uuid}: the panel could not be told of its success ({error}). "
                  "The server and its files are kept on this node; check which node the panel "
                  "names for it and delete the other copy.", uuid=self.uuid, error=str(error))
        self.outcome.callback(Outcome(502, UNKNOWN))

    def _release(self) -> None:
        self._forget()
        deletion, self._deletion = self._deletion, None
        if deletion is not None and self.server is not None:
            self.server.tasks.discard(deletion)

    # -- cancellation and failure (§4.7, §4.8) -------------------------------------------------

    def cancel(self) -> bool:
        """
        ``DELETE /api/transfers/{uuid}``: fail the transfer unless its completion is under way.
        """
        if self.phase not in ("registering", "receiving", "verifying"):
            return False
        self._fail(409, CANCELLED)
        return True

    def _fail(self, status: int, message: str, *, report: bool = True) -> None:
        if self.phase in ("failing", "failed", "succeeded", "kept"):
            return
        self.phase = "failing"
        self.failure_reason = message
        if self._reader is not None:
            self._reader.stop()
        log.warn("Incoming transfer of {uuid} failed: {message}", uuid=self.uuid, message=message)
        Deferred.fromCoroutine(self._clean_up(Outcome(status, message), report)).addErrback(
            self._unexpected)

    async def _clean_up(self, outcome: Outcome, report: bool) -> None:
        node, server = self._node, self.server
        if self._extraction is not None:
            await self._extraction.abort()
        self._release()
        if server is not None:
            server.events.publish("transfer status", "failure")
            if node.registry.get(self.uuid) is server:
                node.registry.remove(self.uuid)
            try:
                await lifecycle.delete(server)
            except Exception:
                log.failure("Destroying the environment of {uuid} failed", uuid=self.uuid)
            try:
                await node.run_blocking(server.volume.remove_root)
            except Exception:
                log.failure("Removing the volume of {uuid} failed", uuid=self.uuid)
        if report:
            await self._report_failure()
        self.phase = "failed"
        self.outcome.callback(outcome)

    async def _report_failure(self) -> None:
        try:
            await self._node.panel.report_transfer_failure(self.uuid)
        except PanelError as e:
            if e.status != 409:
                log.error("Reporting the failed transfer of {uuid} failed: {error}",
                          uuid=self.uuid, error=str(e))

    def _unexpected(self, failure: Failure) -> None:
        log.failure("Incoming transfer of {uuid}: unexpected error", failure, uuid=self.uuid)
        if self.phase not in ("failing", "failed") and not self.outcome.called:
            self._fail(500, INTERNAL)
        elif self.phase == "failing" and not self.outcome.called:
            self.phase = "failed"
            self.outcome.callback(Outcome(500, INTERNAL))


async def _settled(d: Deferred[Any]) -> None:
    """
    Wait for ``d`` whatever its result (a failure is taken up elsewhere).
    """
    done: Deferred[None] = Deferred()
    d.addBoth(lambda _: done.callback(None))
    await done


async def _refresh(server: Server) -> None:
    """
    The configuration after the panel moved the server here (new allocations); only logged when
    it fails: the next start syncs anyway.
    """
    try:
        await lifecycle.sync(server)
    except lifecycle.SyncError as e:
        log.warn("Refreshing {uuid} after its transfer failed: {error}", uuid=server.uuid,
                 error=str(e))
