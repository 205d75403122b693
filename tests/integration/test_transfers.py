"""
Server transfers between two real daemons on loopback, driven by the development panel as the
Panel drives them (transfers.md §2–§7, §11): a transfer that succeeds, and transfers that fail —
a bad token, a checksum mismatch, the connection cut halfway, the destination's panel answering
409, a cancellation on either side — each leaving on both nodes exactly what §4.7 and §7 say.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import treq
from twisted.internet import reactor

from wings_twisted.devpanel.faults import Respond
from wings_twisted.transfers.framing import Framing, body

from ..support import SERVER
from .transfer_nodes import Node, Relay, TwoNodeTestCase

MIB = 1024 * 1024


def write_tree(root: str, files: dict[str, tuple[bytes, int]]) -> None:
    for name, (content, mode) in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)


def read_tree(root: str) -> dict[str, tuple[bytes, int]]:
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mode & 0o7777)
    return found


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
        await self.start()
        files = sample_files()
        write_tree(self.node1.volume(), files)
        expected = read_tree(self.node1.volume())
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
        self.assertEqual(read_tree(self.node2.volume()), expected)
        self.assertEqual(os.stat(self.node2.volume()).st_mode & 0o777, 0o700)
        self.assertEqual(len(self.reports("success")), 1)
        self.assertEqual(self.reports("failure"), [])
        # node1 was deleted by the panel while it waited: no failure, no error.
        await self.wait_for(lambda: "the panel deleted the server here" in self.node1.log()
                            or "accepted by the destination" in self.node1.log(), 10)
        self.assertNotIn("Transfer of {} failed".format(SERVER), self.node1.log())
        # The server on node2 can start (not transferring any more).
        response, text = await self.call(self.node2, "POST",
                                         "/api/servers/{}/files/write?file=new.txt".format(
                                             SERVER), data=b"writable again")
        self.assertEqual(response.code, 204, text)
