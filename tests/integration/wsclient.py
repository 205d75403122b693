"""
A small Autobahn websocket client for the integration tests and the console
benchmark: connect with an ``Origin``, send ``{"event", "args"}`` messages,
and await the decoded events one by one.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet.defer import Deferred, DeferredQueue


class _ClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._message(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._closed(code, reason)


class WsClient:
    """
    One console connection.  ``events`` holds every received message in
    order; ``next`` waits for the next one (optionally of one name).
    """

    def __init__(self, reactor: Any, url: str, origin: str | None) -> None:
        self.reactor = reactor
        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.events: list[dict[str, Any]] = []
        self.protocol: _ClientProtocol | None = None
        self.opened: Deferred[WsClient] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.on_message: Any = None
        factory = WebSocketClientFactory(url, origin=origin, reactor=reactor)
        # No handshake timers: they would outlive a test that closes its socket.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        factory.protocol = _ClientProtocol
        factory.client = self  # type: ignore[attr-defined]
        self.connector = connectWS(factory)

    def _opened(self, protocol: _ClientProtocol) -> None:
        self.protocol = protocol
        if not self.opened.called:
            self.opened.callback(self)

    def _message(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        if self.on_message is not None:
            self.on_message(message)
        else:
            self.queue.put(message)

    def _closed(self, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError("refused: {} {}".format(code, reason)))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send(self, event: str, *args: Any) -> None:
        """
        Send one event.
        """
        assert self.protocol is not None
        self.protocol.sendMessage(json.dumps({"event": event, "args": list(args)}).encode())

    async def next(self, name: str | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """
        The next message (of ``name`` if given, skipping others).
        """
        while True:
            d = self.queue.get()
            d.addTimeout(timeout, self.reactor)
            message = await d
            if name is None or message.get("event") == name:
                return message

    async def until(self, name: str, arg: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """
        Every message up to and including one with ``event == name`` whose
        argument contains ``arg``.
        """
        seen = []
        while True:
            message = await self.next(timeout=timeout)
            seen.append(message)
            if message.get("event") == name and arg in (message.get("args") or [""])[0]:
                return seen

    def close(self) -> Deferred[Any]:
        """
        Close (or drop) the connection; fires once it is gone.
        """
        if self.closed.called:
            return self.closed
        if self.protocol is not None:
            self.protocol.sendClose(1000)
            transport = self.protocol.transport
            abort = self.reactor.callLater(2, transport.abortConnection)
            self.closed.addBoth(lambda result: abort.active() and abort.cancel() or result)
        else:
            self.connector.disconnect()
        return self.closed
