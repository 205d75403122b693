"""
The source's request body (``transfers.push.TransferBody``, transfers.md §3.4, §10.1): framing
around the archive pipe, the hash over exactly what is sent, flow control, the stall timeout, the
early answer of a destination, and the stream as upstream and Pelican destinations read it
(§11.1).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent
from zope.interface import implementer

from wings_twisted import archive
from wings_twisted.streams.pipe import ThreadPipeProducer
from wings_twisted.transfers.framing import Framing
from wings_twisted.transfers.push import STALL_TIMEOUT, TransferBody
from wings_twisted.transfers.services import TransferServices

from ..support import SERVER, Harness
from .pullpeer import Worker
from .transfer_support import DESTINATION, Pair, write_files

B = b"b" * 60


class FakePipe:
    """
    An archive pipe the test drives: ``emit`` chunks, then ``end`` or ``fail``.
    """

    def __init__(self) -> None:
        self.consumer: Any = None
        self.done: Deferred[Any] = Deferred()
        self.paused = 0
        self.resumed = 0
        self.stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[Any]:
        self.consumer = consumer
        return self.done

    def emit(self, data: bytes) -> None:
        self.consumer.write(data)

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IConsumer)
class Sink:
    def __init__(self) -> None:
        self.data = b""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data


class TransferBodyTests(SynchronousTestCase):
    """
    ``TransferBody`` with a scripted pipe and a ``Clock``.
    """

    def make(self, **kwargs: Any) -> tuple[TransferBody, FakePipe, Sink, Clock, list[str]]:
        pipe, sink, clock, events = FakePipe(), Sink(), Clock(), []
        body = TransferBody(Framing(B), pipe, clock=clock,
                            on_archive_end=lambda: events.append("end"),
                            on_stall=lambda: events.append("stall"), **kwargs)
        return body, pipe, sink, clock, events

    def test_body_and_checksum(self) -> None:
        """
        Head, the archive chunks as they come, then both checksum parts with the SHA-256 of
        exactly the archive bytes, then the closing delimiter; ``finished`` says complete.
        """
        body, pipe, sink, clock, events = self.make()
        done = body.startProducing(sink)
        self.assertEqual(sink.data, Framing(B).head())
        pipe.emit(b"abc")
        pipe.emit(b"defg")
        self.assertFalse(done.called)
        pipe.done.callback(None)
        digest = hashlib.sha256(b"abcdefg").hexdigest()
        self.assertEqual(sink.data, Framing(B).head() + b"abcdefg" + Framing(B).tail(digest))
        self.assertEqual(self.successResultOf(done), None)
        self.assertIs(self.successResultOf(body.finished), True)
        self.assertEqual((body.digest, body.archive_bytes, events), (digest, 7, ["end"]))

    def test_flow_control_and_stall(self) -> None:
        """
        Pauses and resumes reach the pipe; a connection that stays unwritable for 10 minutes
        calls ``on_stall`` once, one that resumes in time never does.
        """
        body, pipe, sink, clock, events = self.make()
        body.startProducing(sink)
        body.pauseProducing()
        clock.advance(STALL_TIMEOUT - 1)
        body.resumeProducing()
        clock.advance(STALL_TIMEOUT)
        self.assertEqual((pipe.paused, pipe.resumed, events), (1, 1, []))
        body.pauseProducing()
        clock.advance(STALL_TIMEOUT)
        self.assertEqual(events, ["stall"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """
        ``stopProducing`` stops the archive worker; nothing more is written, ``finished`` says
        incomplete and the ``startProducing`` Deferred never fires (``IBodyProducer``).
        """
        body, pipe, sink, clock, events = self.make()
        done = body.startProducing(sink)
        pipe.emit(b"abc")
        body.pauseProducing()
        body.stopProducing()
        self.assertTrue(pipe.stopped)
        pipe.emit(b"late")
        pipe.done.callback(None)
        self.assertNotIn(b"late", sink.data)
        self.assertNoResult(done)
        self.assertIs(self.successResultOf(body.finished), False)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_archive_failure(self) -> None:
        """
        An archive error fails the body (the request is abandoned, no checksum sent).
        """
        body, pipe, sink, clock, events = self.make()
        done = body.startProducing(sink)
        pipe.done.errback(Failure(OSError(5, "I/O error")))
        self.failureResultOf(done, OSError)
        self.failureResultOf(body.finished, OSError)
        self.assertNotIn(b"checksum", sink.data)

    def test_skip(self) -> None:
        """
        A resumed body writes only what follows the confirmed offset, but hashes everything.
        """
        body, pipe, sink, clock, events = self.make(skip=len(Framing(B).head()) + 2)
        body.startProducing(sink)
        pipe.emit(b"abcd")
        pipe.done.callback(None)
        digest = hashlib.sha256(b"abcd").hexdigest()
        self.assertEqual(sink.data, b"cd" + Framing(B).tail(digest))


def _parts(data: bytes, boundary: bytes) -> list[tuple[str, bytes]]:
    """
    The parts of a multipart body, as Go's reader sees them.
    """
    delimiter = b"\r\n--" + boundary
    assert data.startswith(b"--" + boundary + b"\r\n")
    body = data[len(boundary) + 4:]
    parts = []
    while True:
        head, _, rest = body.partition(b"\r\n\r\n")
        end = rest.index(delimiter)
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        parts.append((name, rest[:end]))
        tail = rest[end + len(delimiter):]
        if tail.startswith(b"--"):
            return parts
        body = tail[2:]


def _tar_end_within(tar: bytes) -> bool:
    offset = 0
    while offset + 1024 <= len(tar):
        block = tar[offset:offset + 512]
        if block == bytes(512):
            return tar[offset + 512:offset + 1024] == bytes(512)
        size = int(block[124:136].rstrip(b"\x00 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    return False


def _go_destination(body: bytes, boundary: bytes, checksum_names: tuple[str, ...]) -> str:
    """
    The part loop of upstream's (or, with other names, Pelican's) ``postTransfers``: the archive
    is hashed only as far as its gzip/tar reader pulls it (buffered reads of 4 KiB, stopping at
    the tar stream's end); a checksum part is compared with that hash.
    """
    archive_hash = None
    verified = False
    for name, data in _parts(body, boundary):
        if name == "archive":
            hasher = hashlib.sha256()
            inflater = zlib.decompressobj(31)
            tar = b""
            position = 0
            while position < len(data) and not _tar_end_within(tar):
                chunk = data[position:position + 4096]
                position += len(chunk)
                hasher.update(chunk)
                tar += inflater.decompress(chunk)
            archive_hash = hasher.hexdigest()
        elif any(name == n or (n.endswith("*") and name.startswith(n[:-1]))
                 for n in checksum_names):
            if archive_hash is None:
                return "archive must be sent before the checksum"
            if data.decode().lower() != archive_hash:
                return "checksums don't match"
            verified = True
    return "ok" if archive_hash is not None and verified else "missing archive or checksum"


class InteropTests(SynchronousTestCase):
    """
    transfers.md §11.1: what an upstream or a Pelican destination makes of our stream.
    """

    def stream(self) -> tuple[bytes, bytes]:
        h = Harness(FilePath(self.mktemp()))
        server = h.add_server(SERVER)
        write_files(server.volume.root, {
            "big.bin": (os.urandom(300_000), 0o644),
            "text.txt": (b"line\n" * 50_000, 0o640),
            "empty": (b"", 0o600),
        })
        framing = Framing()
        pipe: ThreadPipeProducer[Any] = ThreadPipeProducer(
            lambda write: archive.write_tar_gz(server.volume, archive.volume_selection(), write,
                                               level=1),
            run_blocking=h.node.run_blocking, call_from_thread=lambda f: f())
        body = TransferBody(framing, pipe, clock=h.clock)
        sink = Sink()
        self.successResultOf(body.startProducing(sink))
        return sink.data, framing.boundary

    def test_upstream_destination(self) -> None:
        """
        Upstream reads ``archive`` and ``checksum`` and skips ``checksum_archive``; the hash of
        what its reader pulled equals our checksum: the archive part ends with the gzip trailer.
        """
        data, boundary = self.stream()
        self.assertEqual(_go_destination(data, boundary, ("checksum",)), "ok")

    def test_pelican_destination(self) -> None:
        """
        Pelican only reads a part whose name starts with ``checksum_archive``.
        """
        data, boundary = self.stream()
        self.assertEqual(_go_destination(data, boundary, ("checksum_archive*",)), "ok")

    def test_model_catches_padding(self) -> None:
        """
        The model itself: padding after the trailer that upstream's reader never pulls makes
        its hash differ (why §3.4.2 forbids it).
        """
        data, boundary = self.stream()
        parts = dict(_parts(data, boundary))
        padded = parts["archive"] + bytes(16384)
        framing = Framing(boundary, checksum_archive=False)
        body = framing.head() + padded + framing.tail(hashlib.sha256(padded).hexdigest())
        self.assertEqual(_go_destination(body, boundary, ("checksum",)), "checksums don't match")


class EarlyAnswerTests(SynchronousTestCase):
    """
    transfers.md §10.1: the destination answers before the body is complete.
    """

    def test_early_error_stops_the_archive(self) -> None:
        """
        A 403 while the archive is still being made: the request ends with the answer, the
        producer's ``stopProducing`` stops the worker (its job, run later, writes nothing), the
        connection is closed, and the source fails as §3.5 says (failure reported, ``failure``
        and ``failed`` published, no longer transferring).
        """
        h = Harness(FilePath(self.mktemp()))
        worker = Worker()
        h.node.run_blocking = worker  # type: ignore[assignment]
        reactor = MemoryReactorClock()
        transfers = TransferServices(h.node, agent=Agent(reactor))
        from wings_twisted.web.site import build_site
        h.site = build_site(h.node, transfers=transfers)
        server = h.add_server(SERVER)
        write_files(server.volume.root, {"a.bin": (os.urandom(50_000), 0o644)})
        h.state.servers[SERVER].transfer = True
        events: list[tuple[str, str | None]] = []
        server.events.subscribe(lambda e: events.append((e.name, e.arg)))
        body = json.dumps({"url": DESTINATION, "token": "Bearer x"}).encode()
        response = h.get("/api/servers/{}/transfer".format(SERVER), method="POST", body=body)
        self.assertEqual(response.status, 202)
        # The disk usage (the progress total) is the only job so far: run it.
        worker.finish_all()
        host, port, factory, *_ = reactor.tcpClients[0]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        reactor.advance(0)
        sent = bytes(transport.value())
        self.assertIn(b"Transfer-Encoding: chunked", sent)
        self.assertIn(b"Authorization: Bearer x", sent)
        self.assertEqual(len(worker.pending), 1)  # the archive job, not run yet
        protocol.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n"
                              b"Connection: close\r\n\r\n{}")
        self.assertTrue(transport.disconnecting)
        transfer = transfers.outgoing.get(SERVER)
        self.assertIsNone(transfer)
        self.assertEqual([e for e in events if e[0] == "transfer status"],
                         [("transfer status", "processing"), ("transfer status", "failure"),
                          ("transfer status", "failed")])
        self.assertFalse(server.occupancy.transferring)
        self.assertEqual(len(h.state.transfer_reports), 1)
        # The stopped worker, run now, raises at its first write and writes nothing.
        written_before = len(transport.value())
        worker.finish_all()
        self.assertEqual(len(transport.value()), written_before)


class PairSmokeTests(SynchronousTestCase):
    """
    The in-memory pair the other transfer tests use.
    """

    def test_pair(self) -> None:
        """
        A transfer between two in-memory nodes moves a file.
        """
        pair = Pair(FilePath(self.mktemp()))
        write_files(pair.server.volume.root, {"a": (b"1", 0o644)})
        self.assertEqual(pair.start().status, 202)
        pair.flush()
        destination = pair.destination.node.registry.get(SERVER)
        self.assertIsNotNone(destination)
