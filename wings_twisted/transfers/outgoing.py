"""
The push of a server to its destination (transfers.md §3.2–§3.7), its failure and cancellation;
``source.begin`` accepts the panel's request and makes it.

`OutgoingTransfer.run` is the push (§3.2), run as the server's tracked work (a deletion cancels
it): ``Preparing…``, status ``processing``, the disk usage as the progress total, ``Streaming…``
with a progress line every 5 seconds, the request of §3.3 with the body of ``push``, and the
destination's answer: 200 is success (the outgoing transfer is forgotten; the server stays stopped
and *transferring* until the panel deletes it, §3.7); anything else is a failure (§3.5): report
``transfer/failure`` to the panel (409 = already resolved, fine), publish ``failure`` then
``failed`` (project: the stock frontend clears its banner only on ``failed``), clear
*transferring*, and close the connection if it is still open.  The server keeps its files and
stays stopped.

A deletion of the server while the push waits for the destination (the panel deletes the source
before the destination answers it, §4.6) is the normal end of a successful transfer: the status
becomes ``completed`` and nothing is reported (§3.7).

States (``OutgoingTransfer.status``) and their inputs; an input not in the table changes nothing:

==============  ===============================  ==============
input           from                             to
==============  ===============================  ==============
``start``       ``pending``                      ``processing``
``cancel``      ``pending``, ``processing``      ``cancelling``
``succeed``     ``processing``                   ``completed``
``deleted``     ``pending``, ``processing``,     ``completed``
                ``cancelling``
``fail``        ``pending``, ``processing``      ``failed``
``fail``        ``cancelling``                   ``cancelled``
==============  ===============================  ==============

Decision where the spec is silent: after the body was written the destination has 30 minutes to
answer (it creates the environment, which may pull an image, and
reports to the panel) before the push is given up as failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Final, Literal, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from .. import __version__, archive
from ..blocking import RunBlocking
from ..panel import PanelClient, PanelError
from ..servers.server import Server
from ..streams.pipe import ThreadPipeProducer
from .framing import Framing
from .progress import (
    CANCELED,
    FINISHED,
    NO_ARCHIVE,
    PREPARING,
    STREAMING,
    log_line,
    progress_bar,
)
from .push import TransferBody

__all__ = ["ANSWER_TIMEOUT", "OutgoingTransfer", "PushSettings"]

log = Logger()

Status = Literal["pending", "processing", "cancelling", "completed", "failed", "cancelled"]
Input = Literal["start", "cancel", "succeed", "deleted", "fail"]

#: The edges of the machine (module docstring).
TRANSITIONS: Final[dict[tuple[Status, Input], Status]] = {
    ("pending", "start"): "processing",
    ("pending", "cancel"): "cancelling",
    ("processing", "cancel"): "cancelling",
    ("processing", "succeed"): "completed",
    ("pending", "deleted"): "completed",
    ("processing", "deleted"): "completed",
    ("cancelling", "deleted"): "completed",
    ("pending", "fail"): "failed",
    ("processing", "fail"): "failed",
    ("cancelling", "fail"): "cancelled",
}

TICK = 5.0
#: Seconds the destination has to answer once the whole body was written.
ANSWER_TIMEOUT = 1800.0
#: Bytes of the destination's answer read (for the log only).
ANSWER_CAP = 64 * 1024



@dataclass(frozen=True)
class PushSettings:
    """
    What a push needs from the node.

    :param level: the gzip level of ``system.backups.compression_level``.
    :param checksum_archive: ``system.transfers.send_checksum_archive``.
    """

    clock: IReactorTime
    run_blocking: RunBlocking
    call_from_thread: Callable[[Callable[[], None]], object]
    agent: IAgent | None
    panel: PanelClient
    level: int
    checksum_archive: bool


class _Capped(Protocol):
    """
    Reads a response body up to ``ANSWER_CAP`` bytes, then drops the connection.
    """

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if len(self.data) < ANSWER_CAP:
            self.data += data[:ANSWER_CAP - len(self.data)]
        elif self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.data)


class OutgoingTransfer:
    """
    One push of a server to a destination; see the module docstring.
    """

    def __init__(self, server: Server, url: str, token: str, settings: PushSettings, *,
                 forget: Callable[[], None]) -> None:
        self.server = server
        self.url = url
        self.token = token
        self._settings = settings
        self._forget = forget
        self.status: Status = "pending"
        self._request: Deferred[IResponse] | None = None
        self._body: TransferBody | None = None
        self._pipe: ThreadPipeProducer[Any] | None = None
        self._writer: Any = None
        self._ticker: LoopingCall | None = None
        self._cancelled = False
        self._archive_error: Failure | None = None
        self.total = 0
        #: Why the push failed (for logs and tests).
        self.reason = ""

    # -- the machine ---------------------------------------------------------------------------

    def _input(self, name: Input) -> bool:
        target = TRANSITIONS.get((self.status, name))
        if target is None:
            return False
        self.status = target
        return True

    @property
    def written(self) -> int:
        """
        File-content bytes archived so far (the progress counter, ``backups.md`` §5.4).
        """
        writer = self._writer
        return int(writer.content_bytes) if writer is not None else 0

    def _log(self, message: str) -> None:
        server = self.server
        server.events.publish("transfer logs", log_line(self._settings.clock.seconds(), message))
        log.info("Transfer of {uuid}: {message}", uuid=server.uuid, message=message)

    def _status(self, value: str) -> None:
        self.server.events.publish("transfer status", value)

    # -- inputs from outside -------------------------------------------------------------------

    def cancel(self) -> None:
        """
        ``DELETE /api/servers/{uuid}/transfer`` (§3.6): nothing once the transfer ended or is
        already being cancelled; otherwise publish ``cancelling`` and abort the push.
        """
        if not self._input("cancel"):
            return
        self._cancelled = True
        self._status("cancelling")
        self._abort()

    def _abort(self) -> None:
        if self._pipe is not None:
            self._pipe.stopProducing()
        if self._body is not None:
            self._body.stopProducing()
        request = self._request
        if request is not None:
            # Not "if not request.called": while it waits for the connection's own Deferred it
            # counts as called, and cancel() is forwarded to that one.
            request.cancel()

    # -- the push ------------------------------------------------------------------------------

    async def run(self) -> None:
        """
        §3.2, then success or §3.5.
        """
        try:
            outcome = await self._push()
        except Exception as e:
            if self._cancelled:
                outcome = "cancelled"
            elif self.server.occupancy.deleted or isinstance(e, CancelledError):
                outcome = "deleted"
            elif self.reason:
                outcome = self.reason
            else:
                outcome = "the request failed: " + _describe(e)
        self._stop_ticker()
        if self.server.occupancy.deleted or outcome == "deleted":
            self._input("deleted")
            self._abort()
            self._forget()
            log.info("Transfer of {uuid} completed: the panel deleted the server here",
                     uuid=self.server.uuid)
            return
        if outcome == "ok" and self._input("succeed"):
            log.info("Transfer of {uuid} accepted by the destination", uuid=self.server.uuid)
            self._forget()
            return
        self.reason = outcome
        await self._failed()

    async def _push(self) -> str:
        settings = self._settings
        server = self.server
        self._log(PREPARING)
        if not self._input("start"):
            return "cancelled"
        self._status("processing")
        try:
            self.total = await settings.run_blocking(server.volume.usage)
        except Exception as e:
            self._log(NO_ARCHIVE)
            return "no disk usage: {}".format(e)
        if self.status != "processing":
            return "cancelled"
        if settings.agent is None:
            return "no outgoing connections in this daemon"
        self._log(STREAMING)
        self._ticker = LoopingCall(lambda: self._log(progress_bar(self.written, self.total)))
        self._ticker.clock = settings.clock
        self._ticker.start(TICK, now=False).addErrback(
            lambda f: log.failure("Transfer progress ticker failed", f))
        framing = Framing(checksum_archive=settings.checksum_archive)
        volume, level = server.volume, settings.level

        def remember(writer: Any) -> None:
            self._writer = writer

        pipe: ThreadPipeProducer[Any] = ThreadPipeProducer(
            lambda write: archive.write_tar_gz(volume, archive.volume_selection(), write,
                                               level=level, on_writer=remember),
            run_blocking=settings.run_blocking, call_from_thread=settings.call_from_thread)
        self._pipe = pipe
        body = TransferBody(framing, pipe, clock=settings.clock,
                            on_archive_end=self._archive_end, on_stall=self._stalled)
        self._body = body
        headers = Headers({
            b"Authorization": [self.token.encode("utf-8")],
            b"Content-Type": [framing.content_type],
            b"User-Agent": ["Pterodactyl Wings/v{} (wings-twisted)".format(
                __version__).encode("ascii")],
        })
        self._request = settings.agent.request(b"POST", self.url.encode("utf-8"), headers, body)
        finished = body.finished
        finished.addCallbacks(self._body_written, self._body_failed)
        response = await self._request
        self._request = None
        if not finished.called:
            # An early answer (§10.1): the body is given up.
            body.stopProducing()
        self._stop_ticker()
        answer = await self._read(response)
        complete = await finished
        if self._archive_error is not None:
            return "the archive failed: " + _describe(self._archive_error.value)
        if response.code == 200 and complete:
            return "ok"
        return "destination answered {} {}: {!r}".format(
            response.code, response.phrase.decode("latin-1", "replace"), answer[:300])

    def _body_written(self, complete: bool) -> bool:
        request = self._request
        if complete and request is not None:
            timer = self._settings.clock.callLater(ANSWER_TIMEOUT, self._answer_timeout)

            def answered(result: IResponse | Failure) -> IResponse | Failure:
                if timer.active():
                    timer.cancel()
                return result

            request.addBoth(answered)
        return complete

    def _body_failed(self, failure: Failure) -> bool:
        self._archive_error = failure
        log.failure("Archiving {uuid} for its transfer failed", failure, uuid=self.server.uuid)
        return False

    def _answer_timeout(self) -> None:
        log.error("Transfer of {uuid}: the destination did not answer within {minutes} minutes",
                  uuid=self.server.uuid, minutes=int(ANSWER_TIMEOUT // 60))
        self.reason = "the destination did not answer"
        request = self._request
        if request is not None:
            request.cancel()

    @staticmethod
    async def _read(response: IResponse) -> bytes:
        reader = _Capped()
        response.deliverBody(reader)
        return await reader.done

    def _archive_end(self) -> None:
        self._stop_ticker()
        self._log(FINISHED)

    def _stalled(self) -> None:
        log.error("Transfer of {uuid}: the destination read nothing for 10 minutes; giving up",
                  uuid=self.server.uuid)
        self.reason = "the destination stopped reading"
        self._abort()

    def _stop_ticker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker.running:
            ticker.stop()

    async def _failed(self) -> None:
        """
        §3.5.
        """
        server = self.server
        cancelled = self.status == "cancelling"
        self._input("fail")
        self._abort()
        log.warn("Transfer of {uuid} failed: {reason}", uuid=server.uuid, reason=self.reason)
        try:
            await self._settings.panel.report_transfer_failure(server.uuid)
        except PanelError as e:
            if e.status != 409:
                log.error("Reporting the failed transfer of {uuid} failed: {error}",
                          uuid=server.uuid, error=str(e))
        except CancelledError:
            pass
        if server.occupancy.deleted:
            self._forget()
            return
        self._status("failure")
        self._status("failed")
        server.occupancy.finished()
        self._forget()
        if cancelled:
            self._log(CANCELED)


def _describe(error: BaseException) -> str:
    """
    One line for an exception, with the reasons Twisted's client wraps.
    """
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(str(r.getErrorMessage()) for r in reasons)
    return str(error) or error.__class__.__name__


def describe(transfer: OutgoingTransfer) -> str:
    """
    A JSON line describing a transfer (debug logs).
    """
    return json.dumps({"server": transfer.server.uuid, "status": transfer.status,
                       "total": transfer.total, "written": transfer.written})
