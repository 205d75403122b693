"""
Server transfers between two real daemons on loopback, driven by the development panel as the
Panel drives them (transfers.md §2–§7, §11): a transfer that succeeds, and transfers that fail —
a bad token, a checksum mismatch, the connection cut halfway, the destination's panel answering
409, a cancellation on either side — each leaving on both nodes exactly what §4.7 and §7 say.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from wings_twisted.transfers.framing import Framing, body

from ..support import SERVER
from ..unit.transfer_support import tree, write_files
from .test_console import GAME
from .transfer_nodes import Relay, TwoNodeTestCase

MIB = 1024 * 1024


def sample_files(big: int = 3 * MIB) -> dict[str, tuple[bytes, int]]:
    return {
        "server.properties": (b"motd=A transferred server\n", 0o644),
        "plugins/setuid-tool": (b"#!/bin/sh\necho hi\n", 0o4750),
        "plugins/config.yml": (b"value: 1\n" * 1000, 0o600),
        "world/region/r.0.0.mca": (os.urandom(big), 0o644),
        "world/empty.dat": (b"", 0o644),
        "db.secret": (b"denylisted but the server's own\n", 0o640),
    }


class TransferSuccessTests(TwoNodeTestCase):
    """
    A transfer between two real daemons that succeeds.
    """

    async def test_transfer_moves_the_server(self) -> None:
        """
        The panel's transfer moves the files with their content and permission bits (a
        denylisted file and a 4750 file included: transfers.md §11.10), the panel moves the
        server to node2 and deletes it on node1 while node1 still waits for node2's answer
        (§11.8: no failure report), node2 keeps it registered and idle.
        """
        await self.start(invocation=GAME, environment={"MAX_PLAYERS": "4"})
        write_files(self.node1.volume(), sample_files())
        # The server runs: the source stops it before it streams (§3.1 step 4).
        source = await self.websocket(self.node1)
        source.send("set state", "start")
        await source.until("status", "running", timeout=30)
        # (The start's permission fix chowned the files, which drops set-user-ID bits: put the
        # 4750 file's mode back.)
        os.chmod(os.path.join(self.node1.volume(), "plugins/setuid-tool"), 0o4750)
        expected = tree(self.node1.volume())
        reply = await self.calls.start_transfer(SERVER, "node2")
        self.assertEqual(reply.status, 202, reply.body)
        record = self.state.transfers[SERVER]
        await self.wait_for(lambda: record.successful is not None, 60, "the transfer's end")
        self.assertTrue(record.successful)
        self.assertEqual(self.state.servers[SERVER].node, "node2")
        await self.wait_for(lambda: not os.path.exists(self.node1.volume()), 30,
                            "node1's volume removed")
        self.assertFalse(await self.registered(self.node1))
        self.assertTrue(await self.registered(self.node2))
        self.assertEqual(tree(self.node2.volume()), expected)
        self.assertEqual(os.stat(self.node2.volume()).st_mode & 0o777, 0o700)
        self.assertEqual(len(self.reports("success")), 1)
        self.assertEqual(self.reports("failure"), [])
        seen = [(m["event"], (m.get("args") or [""])[0]) for m in source.events
                if m["event"] in ("status", "transfer status", "deleted")]
        self.assertEqual(seen[seen.index(("status", "running")) + 1:],
                         [("status", "stopping"), ("status", "offline"),
                          ("transfer status", "processing"), ("transfer status", "completed"),
                          ("deleted", "null")])
        # node1 was deleted by the panel while it waited: no failure, no error.
        await self.wait_for(lambda: "the panel deleted the server here" in self.node1.log()
                            or "accepted by the destination" in self.node1.log(), 10)
        self.assertNotIn("Transfer of {} failed".format(SERVER), self.node1.log())
        # The server on node2 can start (not transferring any more).
        response, text = await self.call(self.node2, "POST",
                                         "/api/servers/{}/files/write?file=new.txt".format(
                                             SERVER), data=b"writable again")
        self.assertEqual(response.code, 204, text)


@implementer(IBodyProducer)
class _Chunks:
    """
    A body of unknown length (sent chunked, as upstream's source sends it).
    """

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes, piece: int = 256 * 1024) -> None:
        self._data = data
        self._piece = piece

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for start in range(0, len(self._data), self._piece):
            consumer.write(self._data[start:start + self._piece])
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def tar_gz(files: dict[str, tuple[bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 1_700_000_000
            archive.addfile(info, io.BytesIO(content))
    return raw.getvalue()


class FailureTestCase(TwoNodeTestCase):
    """
    What a failed transfer must leave behind.
    """

    async def assert_source_intact(self, files: dict[str, tuple[bytes, int]]) -> None:
        """
        node1 keeps the server, its files and no outgoing transfer (§3.5, §7 F).
        """
        await self.wait_for(lambda: "Transfer of {} failed".format(SERVER) in self.node1.log(),
                            30, "node1's failure")
        self.assertTrue(await self.registered(self.node1))
        self.assertEqual(tree(self.node1.volume()), files)
        response, text = await self.call(self.node1, "DELETE",
                                         "/api/servers/{}/transfer".format(SERVER))
        self.assertEqual(response.code, 409, text)

    async def assert_destination_clean(self) -> None:
        """
        node2 has neither the server nor its volume (§4.7).
        """
        await self.wait_for(lambda: not os.path.exists(self.node2.volume()), 30,
                            "node2's volume removed")
        self.assertFalse(await self.registered(self.node2))
        self.assertEqual([n for n in os.listdir(self.node2.data) if n != ".sftp"], [])

    def accepted_failures(self) -> int:
        return len([r for r in self.reports("failure") if r.status == 204])

class TransferFailureTests(FailureTestCase):
    """
    Transfers that fail between two real daemons.
    """

    async def test_bad_token(self) -> None:
        """
        A token node2 did not sign: node2 answers 403 while node1 is still sending, node1 stops
        its archive and reports the failure; nothing is left on node2.
        """
        await self.start()
        files = sample_files()
        write_files(self.node1.volume(), files)
        record = self.pending()
        forged = self.token(wrong_key=True)
        response, text = await self.push(self.node2.url + "/api/transfers", forged)
        self.assertEqual(response.code, 202, text)
        await self.assert_source_intact(files)
        self.assertIn("destination answered 403", self.node1.log())
        await self.wait_for(lambda: record.successful is False, 30)
        self.assertEqual(self.accepted_failures(), 1)
        await self.assert_destination_clean()

    async def test_checksum_mismatch(self) -> None:
        """
        An upstream-shaped body (60-hex boundary, chunked, ``archive`` + ``checksum``) whose
        checksum is wrong: node2 answers 400 ``checksums don't match``, reports the failure and
        removes what it extracted.
        """
        await self.start()
        record = self.pending()
        archive = tar_gz(sample_files())
        framing = Framing(checksum_archive=False)
        payload = body(framing, archive, "0" * 64)
        response = await treq.post(
            self.node2.url + "/api/transfers", data=_Chunks(payload), reactor=reactor,
            persistent=False, headers={"Authorization": "Bearer " + self.token(),
                                       "Content-Type": framing.content_type.decode()})
        text = await response.content()
        self.assertEqual(response.code, 400, text)
        self.assertIn(b"checksums don't match", text)
        await self.wait_for(lambda: record.successful is False, 30)
        self.assertEqual(self.accepted_failures(), 1)
        await self.assert_destination_clean()

    async def test_upstream_source_is_accepted(self) -> None:
        """
        transfers.md §11.2: the body an upstream source sends (60-hex boundary, chunked,
        ``archive`` + ``checksum`` only) is accepted: 200, the files on node2, the panel told.
        """
        await self.start()
        record = self.pending()
        files = sample_files()
        archive = tar_gz(files)
        framing = Framing(checksum_archive=False)
        self.assertEqual(len(framing.boundary), 60)
        payload = body(framing, archive, hashlib.sha256(archive).hexdigest())
        response = await treq.post(
            self.node2.url + "/api/transfers", data=_Chunks(payload), reactor=reactor,
            persistent=False, headers={"Authorization": "Bearer " + self.token(),
                                       "Content-Type": framing.content_type.decode()})
        self.assertEqual(response.code, 200, await response.content())
        self.assertTrue(record.successful)
        self.assertEqual(tree(self.node2.volume()), files)

    async def test_connection_cut_halfway(self) -> None:
        """
        The connection cut after half the body: node2 removes the half it extracted and
        unregisters the server, node1 keeps everything; one failure report is accepted.
        """
        await self.start()
        files = sample_files(big=24 * MIB)
        write_files(self.node1.volume(), files)
        record = self.pending()
        relay = Relay(int(self.node2.url.rpartition(":")[2]), limit=12 * MIB, mode="cut")
        port = await relay.start()
        self.addCleanup(relay.stop)
        response, text = await self.push("http://127.0.0.1:{}/api/transfers".format(port),
                                         self.token())
        self.assertEqual(response.code, 202, text)
        await self.assert_source_intact(files)
        await self.wait_for(lambda: "Incoming transfer of {} failed".format(SERVER)
                            in self.node2.log(), 30)
        await self.assert_destination_clean()
        await self.wait_for(lambda: len(self.reports("failure")) == 2, 30, "both reports")
        self.assertFalse(record.successful)
        self.assertEqual(self.accepted_failures(), 1)

    async def test_panel_rejects_success(self) -> None:
        """
        transfers.md §11.6: the panel no longer has the transfer (it rolled back) and answers 409
        to node2's success report: node2 cleans up and answers 409 to node1, which reports the
        failure and gets 409 too; node1 keeps the server.
        """
        await self.start()
        files = sample_files(big=16 * MIB)
        write_files(self.node1.volume(), files)
        self.pending()
        response, text = await self.push(self.node2.url + "/api/transfers", self.token())
        self.assertEqual(response.code, 202, text)
        # The panel's call timed out: its transaction rolled back.
        del self.state.transfers[SERVER]
        self.state.servers[SERVER].transfer = False
        await self.assert_source_intact(files)
        self.assertIn("destination answered 409", self.node1.log())
        await self.assert_destination_clean()
        self.assertEqual([r.status for r in self.reports("success")], [409])
        self.assertEqual([r.status for r in self.reports("failure")], [409])
        self.assertEqual(self.state.servers[SERVER].node, None)


class TransferCancelTests(FailureTestCase):
    """
    transfers.md §11.9: cancelling on either side.
    """

    async def held(self) -> tuple[Relay, dict[str, tuple[bytes, int]]]:
        await self.start(invocation=GAME, environment={"MAX_PLAYERS": "4"})
        files = sample_files(big=24 * MIB)
        write_files(self.node1.volume(), files)
        self.pending()
        relay = Relay(int(self.node2.url.rpartition(":")[2]), limit=8 * MIB, mode="hold")
        port = await relay.start()
        self.addCleanup(relay.stop)
        response, text = await self.push("http://127.0.0.1:{}/api/transfers".format(port),
                                         self.token())
        self.assertEqual(response.code, 202, text)
        await relay.reached.addTimeout(30, reactor)
        await self.wait_for(lambda: "Receiving server" in self.node2.log(), 30)
        return relay, files

    async def test_cancel_on_the_source(self) -> None:
        """
        ``DELETE /api/servers/{uuid}/transfer`` on node1 mid-stream: ``cancelling``, then
        ``failure`` and ``failed`` on node1 and ``failure`` on node2; exactly one failure report
        is accepted; node1 is usable again (it starts), node2 is clean.
        """
        relay, files = await self.held()
        source = await self.websocket(self.node1)
        destination = await self.websocket(self.node2)
        response, text = await self.call(self.node1, "DELETE",
                                         "/api/servers/{}/transfer".format(SERVER))
        self.assertEqual(response.code, 202, text)
        await source.until("transfer status", "failed", timeout=30)
        statuses = [m["args"][0] for m in source.events if m["event"] == "transfer status"]
        self.assertEqual(statuses, ["cancelling", "failure", "failed"])
        await source.until("transfer logs", "Canceled.", timeout=30)
        await destination.until("transfer status", "failure", timeout=30)
        await self.assert_source_intact(files)
        await self.assert_destination_clean()
        await self.wait_for(lambda: len(self.reports("failure")) == 2, 30, "both reports")
        self.assertEqual(self.accepted_failures(), 1)
        source.send("set state", "start")
        await source.until("status", "running", timeout=30)

    async def test_cancel_on_the_destination(self) -> None:
        """
        ``DELETE /api/transfers/{uuid}`` on node2 mid-stream: node2 answers the source and
        cleans up, node1 fails with ``failure`` and ``failed``; exactly one failure report is
        accepted.
        """
        relay, files = await self.held()
        source = await self.websocket(self.node1)
        destination = await self.websocket(self.node2)
        response, text = await self.call(self.node2, "DELETE", "/api/transfers/" + SERVER)
        self.assertEqual(response.code, 202, text)
        await destination.until("transfer status", "failure", timeout=30)
        await source.until("transfer status", "failed", timeout=30)
        await self.assert_source_intact(files)
        await self.assert_destination_clean()
        await self.wait_for(lambda: len(self.reports("failure")) == 2, 30, "both reports")
        self.assertEqual(self.accepted_failures(), 1)
        response, text = await self.call(self.node2, "DELETE", "/api/transfers/" + SERVER)
        self.assertEqual(response.code, 404, text)
