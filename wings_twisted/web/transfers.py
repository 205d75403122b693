"""
The transfer routes (api.md routes 35–38; transfers.md §3.1, §3.6, §4, §10.2).

::

    /api/servers/{uuid}/transfer   POST (start the push: 202), DELETE (cancel it: 202)   bearer
    /api/transfers                 POST: the body of an incoming transfer                transfer JWT
    /api/transfers/{uuid}          DELETE: cancel an incoming transfer (202)             bearer

``POST /api/transfers`` is never read into ``request.content``: ``ApiRequest.gotLength`` hands its
body to a `TransferSink` once the headers are in.  The sink checks the token there (401/403) and
the conflicts of §4.2 (409), answering a refusal at once with ``Connection: close`` (the body,
possibly gigabytes, is not read).  Otherwise it pauses the connection while the incoming server is
registered (the panel fetch), replays the few bytes read meanwhile, and streams the body into the
``transfers.IncomingTransfer``.  The connection's idle timeout becomes 10 minutes (§4.9); it does
not run while the extraction holds the connection paused.

The answer is the transfer's outcome.  When it is decided before the body ended (a failure, a
cancellation, or a success after the body went on past its closing delimiter) it is written
straight onto the connection, which is then closed; otherwise ``render_POST``, which runs once the
body ended, renders it.
"""

from __future__ import annotations

from typing import Callable, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request
from zope.interface import implementer

from ..node import Node
from ..servers.server import Server
from ..transfers.receive import IncomingTransfer, Outcome
from ..transfers.services import TransferServices
from ..transfers.source import TransferError
from ..transfers.token import BadTransferToken, MissingAuthorization
from .body import read_object
from .channel import BodyProducer, mark_authenticated
from .errors import ApiError, JsonResource, answer_and_close
from .guard import BearerGuard
from .lookup import ServerLookup
from .request import ApiRequest, transport_of

__all__ = ["IDLE_TIMEOUT", "ServerTransferResource", "TransferSink", "TransfersBranch",
           "transfer_sink_factory"]

log = Logger()

#: Seconds without a byte of the body before the connection is closed (§4.9).
IDLE_TIMEOUT = 600


def _error(e: TransferError | MissingAuthorization | BadTransferToken) -> ApiError:
    headers = {b"WWW-Authenticate": b"Bearer"} if isinstance(e, MissingAuthorization) else None
    return ApiError(e.message, status=e.status, headers=headers)


class ServerTransferResource(JsonResource):
    """
    ``/api/servers/{uuid}/transfer``.
    """

    isLeaf = True

    def __init__(self, services: TransferServices, server: Server) -> None:
        super().__init__()
        self._services = services
        self._server = server

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Accept the panel's request and start the push in the background (§3.1): 202.
        """
        body = read_object(request)
        try:
            await self._services.send(self._server, body)
        except TransferError as e:
            raise _error(e) from None
        request.setResponseCode(202)

    def render_DELETE(self, request: ApiRequest) -> None:
        """
        Cancel the push (§3.6): 202.
        """
        try:
            self._services.cancel_outgoing(self._server)
        except TransferError as e:
            raise _error(e) from None
        request.setResponseCode(202)


class _IncomingCancel(JsonResource):
    """
    ``DELETE /api/transfers/{uuid}`` of a registered server (§4.8).
    """

    isLeaf = True

    def __init__(self, services: TransferServices, server: Server) -> None:
        super().__init__()
        self._services = services
        self._server = server

    def render_DELETE(self, request: ApiRequest) -> None:
        """
        Fail the incoming transfer (it answers its source and cleans up): 202.
        """
        try:
            self._services.cancel_incoming(self._server.uuid)
        except TransferError as e:
            raise _error(e) from None
        request.setResponseCode(202)


class TransfersBranch(JsonResource):
    """
    ``/api/transfers``: ``POST`` (JWT, the body in a `TransferSink`), and ``{uuid}`` behind the
    node's bearer token.
    """

    def __init__(self, node: Node, services: TransferServices) -> None:
        super().__init__()
        self._node = node
        self._services = services

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``{uuid}``: the server looked up after the bearer check.
        """
        node, services = self._node, self._services
        lookup = ServerLookup(node, path, lambda server: _IncomingCancel(services, server))
        guard = BearerGuard(lookup, lambda: str(node.config.token))
        return guard

    async def render_POST(self, request: ApiRequest) -> bytes:
        """
        The body has ended: the transfer's answer, once decided.
        """
        sink: object = request.content
        if not isinstance(sink, TransferSink):  # pragma: no cover - wiring error
            raise RuntimeError("the transfer body was not streamed")
        outcome = await sink.body_ended()
        if outcome is None:
            return await Deferred()  # answered on the connection already; it is closing
        if outcome.message is not None:
            raise ApiError(outcome.message, status=outcome.status)
        request.setResponseCode(outcome.status)
        return b""


@implementer(IPushProducer)
class _Gate:
    """
    The connection's reading, paused while any reason holds it (registration, the extraction's
    back-pressure, a transfer that stopped reading for good).
    """

    def __init__(self, producer: BodyProducer) -> None:
        self._producer = producer
        self._reasons: set[str] = set()

    def hold(self, reason: str) -> None:
        if not self._reasons:
            self._producer.pauseProducing()
        self._reasons.add(reason)

    def release(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self._producer.resumeProducing()

    # the extraction's view
    def pauseProducing(self) -> None:
        self.hold("back-pressure")

    def resumeProducing(self) -> None:
        self.release("back-pressure")

    def stopProducing(self) -> None:
        self.hold("stopped")


class TransferSink:
    """
    ``request.content`` of ``POST /api/transfers``; see the module docstring.
    """

    def __init__(self, services: TransferServices, request: ApiRequest, uri: bytes,
                 length: int | None) -> None:
        self._request = request
        self._received = 0
        self._pending: list[bytes] = []
        self._transfer: IncomingTransfer | None = None
        self._attached = False
        self._stopped = False
        self._answered = False
        self._ended = False
        self._closed = False
        self._render: Deferred[Outcome | None] | None = None
        self._outcome: Outcome | None = None
        self._gate = _Gate(BodyProducer(cast(IPushProducer, transport_of(request)),
                                        request.channel))
        headers = request.requestHeaders
        authorization = headers.getRawHeaders(b"Authorization")
        content_type = headers.getRawHeaders(b"Content-Type")
        try:
            grant = services.authorize(authorization[0] if authorization else None)
            mark_authenticated(request)
            transfer = services.receive(grant, content_type[0] if content_type else None)
        except (MissingAuthorization, BadTransferToken, TransferError) as e:
            self._answer_now(_error(e))
            return
        except Exception:
            # This runs inside Twisted's header parsing: a bug must become a 500 envelope.
            log.failure("Starting an incoming transfer failed")
            self._answer_now(ApiError())
            return
        self._transfer = transfer
        channel = request.channel
        if channel is not None:
            channel.setTimeout(IDLE_TIMEOUT)
        self._gate.hold("registering")
        transfer.outcome.addCallback(self._decided)
        transfer.outcome.addErrback(lambda f: log.failure("Incoming transfer outcome", f))
        Deferred.fromCoroutine(transfer.register()).addCallbacks(
            self._registered, self._registration_failed)

    # -- what the transfer sees (receive.BodyReader) -------------------------------------------

    @property
    def producer(self) -> IPushProducer:
        """
        The connection's reading, for the extraction's back-pressure.
        """
        return self._gate

    def stop(self) -> None:
        """
        Read nothing more; drop what still arrives.
        """
        self._stopped = True
        self._pending = []
        if not self._closed:
            self._gate.hold("stopped")

    # -- registration --------------------------------------------------------------------------

    def _registered(self, accepting: bool) -> None:
        transfer = self._transfer
        assert transfer is not None
        if not accepting or self._closed:
            if accepting and self._closed:
                transfer.connection_lost()
            return
        transfer.attach(self)
        self._attached = True
        pending, self._pending = self._pending, []
        for chunk in pending:
            transfer.data(chunk)
        if self._ended:
            transfer.body_ended()
        self._gate.release("registering")

    def _registration_failed(self, failure: Failure) -> None:
        log.failure("Registering an incoming transfer failed", failure)
        if self._outcome is None:
            self._decided(Outcome(500, "An unexpected error was encountered while processing "
                                       "this request"))

    # -- the outcome ---------------------------------------------------------------------------

    def _decided(self, outcome: Outcome) -> None:
        self._outcome = outcome
        if self._render is not None:
            render, self._render = self._render, None
            render.callback(outcome)
        elif not self._ended and not self._closed:
            self._answer_now(None if outcome.message is None and outcome.status == 200
                             else ApiError(outcome.message or "", status=outcome.status))

    def _answer_now(self, error: ApiError | None) -> None:
        self._answered = True
        self._stopped = True
        if self._closed or getattr(self._request, "channel", None) is None:
            return
        answer_and_close(self._request, error)

    def body_ended(self) -> Deferred[Outcome | None]:
        """
        The body ended (``render_POST``): fires with the outcome to render, or ``None`` when
        the answer was written already.
        """
        self._ended = True
        if self._answered:
            return Deferred()  # the connection is closing with its answer
        if self._outcome is not None:
            done: Deferred[Outcome | None] = Deferred()
            done.callback(self._outcome)
            return done
        render: Deferred[Outcome | None] = Deferred()
        self._render = render
        if self._attached and self._transfer is not None:
            self._transfer.body_ended()
        return render

    # -- the file-like surface of request.content ----------------------------------------------

    def write(self, data: bytes) -> None:
        """
        One chunk of the body.
        """
        self._received += len(data)
        if self._stopped or self._transfer is None:
            return
        if not self._attached:
            self._pending.append(data)
            return
        self._transfer.data(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """
        Nothing to rewind.
        """
        return 0

    def tell(self) -> int:
        """
        Body bytes received.
        """
        return self._received

    def read(self, size: int = -1) -> bytes:
        """
        The body is not kept.
        """
        return b""

    def close(self) -> None:
        """
        The request finished or its connection was lost.
        """
        if self._closed:
            return
        self._closed = True
        if not self._ended and self._transfer is not None and self._attached:
            self._transfer.connection_lost()


def transfer_sink_factory(services: TransferServices) -> Callable[
        [ApiRequest, bytes, int | None], TransferSink]:
    """
    The body-sink factory of ``POST /api/transfers``.
    """

    def make(request: ApiRequest, uri: bytes, length: int | None) -> TransferSink:
        return TransferSink(services, request, uri, length)

    return make
