"""
Writing ``Reply`` values to twisted.web requests, with scripted faults.

``record_request`` appends a request to ``state.received``.
``serve(request, reactor, fault, normal, done)`` is the one render path of
the development Panel and its S3 double: it applies the fault consumed for
the request (answer, delay on the injected clock, or drop), otherwise calls
``normal()`` for the real behaviour (a reply, or a Deferred of one), writes the reply and reports the status
sent (``None`` for a dropped connection) to ``done``.  A delayed call is
cancelled when the client goes away.
"""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from .faults import Delay, Drop, Fault, Respond, normalise_path
from .replies import Reply, error_reply, server_error
from .state import DevPanelState, ReceivedRequest

log = Logger()

_DETAILS = {
    500: "An error was encountered while processing this request.",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _client_ip(request: Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def record_request(
    state: DevPanelState, request: Request, now: float, route: str | None, body: bool = True
) -> ReceivedRequest:
    """
    Append the request to ``state.received`` and return the record.  With
    ``body=False`` the body is not kept (S3 part uploads).
    """
    content = getattr(request, "content", None)
    raw = content.read() if body and content is not None else b""
    segments = [s.decode("utf-8", "replace") for s in (request.prepath or []) + (request.postpath or [])]
    record = ReceivedRequest(
        method=request.method.decode("ascii", "replace").upper(),
        path=normalise_path("/" + "/".join(segments)),
        route=route,
        # From the URI, not request.args: a form-encoded body must not pass
        # for query parameters.
        query=parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True),
        headers={
            k.decode("latin-1").lower(): vs[-1].decode("latin-1") for k, vs in request.requestHeaders.getAllRawHeaders()
        },
        body=_parse_json(raw),
        raw_body=raw,
        timestamp=now,
        client_ip=_client_ip(request),
    )
    state.received.append(record)
    return record


def fault_reply(fault: Respond) -> Reply:
    """
    The reply a ``Respond`` fault stands for.
    """
    headers = dict(fault.headers)
    if fault.body is None:
        if fault.status == 204:
            return Reply(204, b"", headers)
        detail = _DETAILS.get(fault.status, "Injected fault ({}).".format(fault.status))
        return error_reply(fault.status, detail, headers=headers)
    if isinstance(fault.body, bytes):
        return Reply(fault.status, fault.body, headers)
    headers.setdefault("Content-Type", "application/json")
    return Reply(fault.status, json.dumps(fault.body).encode("utf-8"), headers)


def write_reply(request: Request, reply: Reply) -> None:
    """
    Send ``reply`` and finish the request.
    """
    request.setResponseCode(reply.status)
    for name, value in reply.headers.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    if reply.status != 204:
        request.setHeader(b"content-length", str(len(reply.body)).encode("ascii"))
        if reply.body:
            request.write(reply.body)
    request.finish()


def drop(request: Request) -> None:
    """
    Abort the request's connection without answering.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is not None and hasattr(transport, "abortConnection"):
        transport.abortConnection()
    elif transport is not None:
        transport.loseConnection()


def serve(
    request: Request,
    reactor: IReactorTime,
    fault: Fault | None,
    normal: Callable[[], Reply | Deferred[Reply]],
    done: Callable[[int | None], None],
) -> None:
    """
    Answer ``request`` according to ``fault`` or, without one, ``normal()``.
    """
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)

    def run(step: Fault | None) -> None:
        if gone:
            return
        if isinstance(step, Drop):
            done(None)
            drop(request)
            return
        if isinstance(step, Delay):
            call = reactor.callLater(step.seconds, run, step.then)
            # Stop the timer if the client hangs up while we wait.
            request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
            return
        if isinstance(step, Respond):
            answer: Reply | Deferred[Reply] = fault_reply(step)
        else:
            try:
                answer = normal()
            except Exception:
                log.failure("devpanel handler failed")
                answer = server_error()
        if isinstance(answer, Deferred):
            # A route that calls a daemon before it answers (transfers.py).
            answer.addErrback(failed)
            answer.addCallback(finish)
            return
        finish(answer)

    def failed(failure: Failure) -> Reply:
        log.failure("devpanel handler failed", failure)
        return server_error()

    def finish(reply: Reply) -> None:
        if gone:
            return
        done(reply.status)
        write_reply(request, reply)

    run(fault)
