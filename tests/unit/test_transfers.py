"""
Transfers between two nodes in memory (``transfer_support.Pair``): the source's routes and push,
the destination's registration, body, completion, failures and clean-up, the panel reports and
websocket events, the conformance checks of transfers.md §11 and the attacks the destination
resists.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.devpanel.faults import Delay, Respond
from wings_twisted.servers.occupancy import RECEIVING_MESSAGE
from wings_twisted.transfers.framing import Framing, body

from ..support import SERVER, TOKEN, FakeEnvironment, Harness, hostile_tar_gz
from .transfer_support import (
    Connection,
    Pair,
    chunk,
    post_transfer,
    request_head,
    tar_gz,
    tree,
    upstream_body,
    write_files,
)

OTHER = "0b6c2d4e-1f3a-4b5c-8d7e-9f0a1b2c3d4e"
FILES = {
    "server.properties": (b"motd=moved\n", 0o644),
    "plugins/tool": (b"#!/bin/sh\n", 0o4750),
    "plugins/group-writable.yml": (b"a: 1\n", 0o664),
    "world/region/r.0.0.mca": (os.urandom(200_000), 0o600),
    "db.secret": (b"secret", 0o640),
}


def events_of(server: Any) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []
    server.events.subscribe(lambda e: seen.append((e.name, e.arg)))
    return seen


def statuses(seen: list[tuple[str, str | None]]) -> list[str | None]:
    return [arg for name, arg in seen if name == "transfer status"]


class SourceRouteTests(SynchronousTestCase):
    """
    ``POST``/``DELETE /api/servers/{uuid}/transfer`` on the source (transfers.md §3.1, §3.6).
    """

    def setUp(self) -> None:
        self.pair = Pair(FilePath(self.mktemp()))

    def post(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return self.pair.source.get("/api/servers/{}/transfer".format(SERVER), method="POST",
                                    body=json.dumps(payload).encode(), headers=headers)

    def test_body_validation(self) -> None:
        """
        ``url`` and ``token`` are required (400); the URL must be absolute http(s) (400 with
        the project's text); nothing is marked transferring.
        """
        for payload in ({}, {"url": "http://x/api/transfers"}, {"token": "Bearer x"},
                        {"url": "", "token": "x"}, {"url": 5, "token": "x"}):
            self.assertEqual(self.post(payload).status, 400, payload)
        for url in ("ftp://dest/api/transfers", "/api/transfers", "http://", "dest:8080",
                    "http://dest:99999/x", "http://de st/x"):
            response = self.post({"url": url, "token": "Bearer x"})
            self.assertEqual((response.status, response.json()["error"]),
                             (400, "The transfer URL is not valid."), url)
        self.assertFalse(self.pair.server.occupancy.transferring)

    def test_auth_and_lookup(self) -> None:
        """
        Bearer-authenticated (401/403) before the server lookup (404).
        """
        payload = {"url": "http://dest/api/transfers", "token": "Bearer x"}
        self.assertEqual(self.post(payload, {"Authorization": None}).status, 401)  # type: ignore
        self.assertEqual(self.post(payload, {"Authorization": "Bearer nope"}).status, 403)
        response = self.pair.source.get("/api/servers/{}/transfer".format(OTHER), method="POST",
                                        body=json.dumps(payload).encode())
        self.assertEqual(response.status, 404)

    def test_second_transfer_and_cancel_without_one(self) -> None:
        """
        A second transfer while one runs is 409 with upstream's text; cancelling when none runs
        is 409.
        """
        self.pair.server.occupancy.begin_transfer_out()
        response = self.post({"url": "http://dest/api/transfers", "token": "Bearer x"})
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "A transfer is already in progress for this server."))
        self.pair.server.occupancy.finished()
        response = self.pair.source.get("/api/servers/{}/transfer".format(SERVER),
                                        method="DELETE")
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "Server is not currently being transferred."))

    def test_busy_server(self) -> None:
        """
        A server that is being restored cannot be transferred (409, project).
        """
        self.pair.server.occupancy.begin_restore()
        response = self.post({"url": "http://dest/api/transfers", "token": "Bearer x"})
        self.assertEqual(response.status, 409)
        self.assertIn("restoring", response.json()["error"])

    def test_running_server_is_stopped(self) -> None:
        """
        A running server is stopped gracefully (15 s, no kill) before the 202; one that does not
        stop is a 500 and is no longer marked transferring.
        """
        env = FakeEnvironment()
        self.pair.server.environment = env
        env.set_state("running")
        env.alive = True
        self.assertEqual(self.pair.start().status, 202)
        self.assertIn(("wait_for_stop", 15.0, False), env.calls)
        self.pair.flush()
        other = Pair(FilePath(self.mktemp()))
        stubborn = FakeEnvironment()
        stubborn.on_stop = "ignore"
        stubborn.set_state("running")
        stubborn.alive = True
        other.server.environment = stubborn
        response = other.start()
        self.assertEqual(response.status, 500)
        self.assertFalse(other.server.occupancy.transferring)


class TransferTests(SynchronousTestCase):
    """
    Whole transfers between the two nodes.
    """

    def pair(self, **destination: Any) -> Pair:
        pair = Pair(FilePath(self.mktemp()), **destination)
        write_files(pair.server.volume.root, FILES)
        return pair

    def test_success(self) -> None:
        """
        The files arrive with their content; the destination registers the server, idle, and
        reports success; the source publishes ``processing`` and its log lines, the destination
        ``success``; the source's outgoing transfer is gone and the server stays transferring
        until the panel deletes it (§3.2 step 6).
        """
        pair = self.pair()
        source_events = events_of(pair.server)
        self.assertEqual(pair.start().status, 202)
        pair.flush()
        received = pair.destination.node.registry.get(SERVER)
        assert received is not None
        self.assertEqual(received.occupancy.state, "idle")
        self.assertEqual(set(tree(received.volume.root)), set(FILES))
        self.assertEqual(pair.reports(), [("success", 204)])
        self.assertEqual(statuses(source_events), ["processing"])
        logs = [arg for name, arg in source_events if name == "transfer logs"]
        self.assertEqual(len(logs), 3)
        for line, text in zip(logs, ("Preparing to stream server data to destination...",
                                     "Streaming archive to destination...",
                                     "Finished streaming archive to destination.")):
            assert line is not None
            self.assertIn(text, line)
        self.assertEqual(pair.source_transfers.outgoing, {})
        self.assertEqual(pair.destination_transfers.incoming, {})
        self.assertTrue(pair.server.occupancy.transferring)
        # The panel's GET of the configuration and the refresh after success.
        gets = [r for r in pair.panel.received if r.path == "/servers/" + SERVER]
        self.assertEqual(len(gets), 2)

    def test_modes_and_denylist(self) -> None:
        """
        transfers.md §11.10: a denylisted file and a file of mode 4750 arrive with their content
        and permission bits; group/other write bits go through the umask of 022.
        """
        pair = self.pair()
        pair.panel.servers[SERVER].settings["egg"]["file_denylist"] = ["*.secret"]
        pair.start()
        pair.flush()
        received = tree(os.path.join(pair.destination.config.system.data, SERVER))
        self.assertEqual(received["db.secret"], FILES["db.secret"])
        self.assertEqual(received["plugins/tool"], FILES["plugins/tool"])
        self.assertEqual(received["plugins/group-writable.yml"][1], 0o644)
        self.assertEqual(received["world/region/r.0.0.mca"], FILES["world/region/r.0.0.mca"])

    def test_failure_after_half_the_files(self) -> None:
        """
        transfers.md §11.5: extraction fails part way (the disk limit is reached after some
        files were written): no volume directory and no registered server remain, ``failure``
        is published, the failure is reported and the source fails too.
        """
        pair = self.pair()
        write_files(pair.server.volume.root, {"zz/huge.bin": (os.urandom(3 * 1024 * 1024),
                                                               0o644)})
        pair.panel.servers[SERVER].settings["build"]["disk_space"] = 1
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pair.start()
        pair.flush()
        volume = os.path.join(pair.destination.config.system.data, SERVER)
        self.assertFalse(os.path.exists(volume))
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        answers = [e["reason"] for e in logged if "reason" in e]
        self.assertIn("destination answered 400", answers[0])
        self.assertEqual([name for name, _ in pair.reports()], ["failure", "failure"])
        self.assertEqual([status for _, status in pair.reports()], [204, 409])
        self.assertFalse(pair.server.occupancy.transferring)
        self.assertEqual(set(tree(pair.server.volume.root)), set(FILES) | {"zz/huge.bin"})

    def test_panel_rejects_success(self) -> None:
        """
        transfers.md §11.6: the panel answers 409 to the success report: the destination cleans
        up and answers 409, the source reports failure (409 again, ignored).
        """
        pair = self.pair()
        pair.panel.servers[SERVER].transfer = False  # the panel rolled the transfer back
        source_events = events_of(pair.server)
        pair.start()
        pair.flush()
        self.assertEqual(pair.reports(), [("success", 409), ("failure", 409)])
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        self.assertFalse(os.path.exists(os.path.join(pair.destination.config.system.data,
                                                     SERVER)))
        self.assertEqual(statuses(source_events), ["processing", "failure", "failed"])
        self.assertFalse(pair.server.occupancy.transferring)

    def test_panel_unreachable_keeps_files(self) -> None:
        """
        transfers.md §11.7: the success report cannot be delivered (500s until the 30-second
        budget is spent): the destination keeps the files and the server, registered and no
        longer receiving, publishes ``failure``, answers 502 and reports nothing more.
        """
        pair = self.pair()
        for _ in range(40):
            pair.panel.faults.add("POST", "/servers/{uuid}/transfer/success", Respond(500))
        pair.start()
        pair.flush()
        received = pair.destination.node.registry.get(SERVER)
        assert received is not None
        received_events = events_of(received)
        pair.advance(40)
        self.assertEqual(received.occupancy.state, "idle")
        self.assertEqual(set(tree(received.volume.root)), set(FILES))
        self.assertEqual(statuses(received_events), ["failure"])
        self.assertEqual(pair.destination_transfers.incoming, {})
        reports = pair.reports()
        self.assertTrue(all(name == "success" for name, _ in reports[:-1]))
        # The source got 502 and reported its failure.
        self.assertEqual(reports[-1], ("failure", 204))
        self.assertFalse(pair.server.occupancy.transferring)

    def test_deleted_while_waiting(self) -> None:
        """
        transfers.md §11.8: the panel deletes the server on the source while the source waits
        for the destination's answer: ``completed`` then ``deleted``, and no failure report.
        """
        pair = self.pair()
        pair.panel.faults.add("POST", "/servers/{uuid}/transfer/success", Delay(10))
        source_events = events_of(pair.server)
        pair.start()
        pair.flush()
        response = pair.source.get("/api/servers/" + SERVER, method="DELETE")
        self.assertEqual(response.status, 204)
        pair.advance(12)
        names = [(n, a) for n, a in source_events if n in ("transfer status", "deleted")]
        self.assertEqual(names, [("transfer status", "processing"),
                                 ("transfer status", "completed"), ("deleted", "null")])
        self.assertEqual(pair.reports(), [("success", 204)])
        self.assertEqual(pair.source_transfers.outgoing, {})
        self.assertIsNotNone(pair.destination.node.registry.get(SERVER))

    def hold_registration(self, pair: Pair) -> None:
        """
        Keep the destination's registration waiting for the panel (10 s on its clock).
        """
        pair.panel.faults.add("GET", "/servers/{uuid}", Delay(10))

    def test_cancel_on_the_source(self) -> None:
        """
        transfers.md §11.9, source side: ``cancelling``, then ``failure``, ``failed`` and the
        ``Canceled.`` line on the source; the destination fails and cleans up; one failure
        report is accepted.
        """
        pair = self.pair()
        self.hold_registration(pair)
        source_events = events_of(pair.server)
        pair.start()
        pair.flush()
        self.assertEqual(pair.source.get("/api/servers/{}/transfer".format(SERVER),
                                         method="DELETE").status, 202)
        pair.advance(12)
        self.assertEqual(statuses(source_events), ["processing", "cancelling", "failure",
                                                   "failed"])
        logs = [arg for name, arg in source_events if name == "transfer logs"]
        self.assertIn("Canceled.", logs[-1] or "")
        self.assertEqual(sorted(status for _, status in pair.reports()), [204, 409])
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        self.assertEqual(pair.destination_transfers.incoming, {})
        self.assertFalse(pair.server.occupancy.transferring)

    def test_cancel_on_the_destination(self) -> None:
        """
        transfers.md §11.9, destination side: the body held half way, ``DELETE
        /api/transfers/{uuid}`` on the destination: 202, ``failure`` there, the source answered
        409 and failing with ``failure`` and ``failed``; one failure report is accepted.
        """
        pair = self.pair()
        pair.network.cut_after, pair.network.hold = 100_000, True
        source_events = events_of(pair.server)
        pair.start()
        pair.flush()
        received = pair.destination.node.registry.get(SERVER)
        assert received is not None
        received_events = events_of(received)
        response = pair.destination.get("/api/transfers/" + SERVER, method="DELETE")
        self.assertEqual(response.status, 202, response.body)
        pair.advance(1)
        self.assertEqual(statuses(received_events), ["failure"])
        self.assertEqual(statuses(source_events), ["processing", "failure", "failed"])
        self.assertEqual(pair.reports(), [("failure", 204), ("failure", 409)])
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        self.assertFalse(os.path.exists(os.path.join(pair.destination.config.system.data,
                                                     SERVER)))
        self.assertFalse(pair.server.occupancy.transferring)

    def test_cut_halfway(self) -> None:
        """
        The connection cut half way: both sides fail; the destination has nothing left, the
        source keeps everything; one failure report is accepted.
        """
        pair = self.pair()
        pair.network.cut_after = 100_000
        pair.start()
        pair.flush()
        self.assertEqual(sorted(status for _, status in pair.reports()), [204, 409])
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        self.assertFalse(os.path.exists(os.path.join(pair.destination.config.system.data,
                                                     SERVER)))
        self.assertEqual(tree(pair.server.volume.root), FILES)
        self.assertFalse(pair.server.occupancy.transferring)

    def test_destination_cancel_while_receiving(self) -> None:
        """
        ``DELETE /api/transfers/{uuid}`` while the body arrives: 202, ``failure`` published, the
        server unregistered and its volume removed, the source answered 409; a second DELETE is
        a 404 (unknown server).
        """
        pair = self.pair()
        token = pair.token()
        archive = tar_gz({"a": b"1" * 1000})
        framing = Framing(checksum_archive=False)
        connection = Connection(pair.destination.site)
        connection.send(request_head(token, framing.content_type) + chunk(framing.head()
                                                                          + archive[:100]))
        received = pair.destination.node.registry.get(SERVER)
        assert received is not None
        received_events = events_of(received)
        response = pair.destination.get("/api/transfers/" + SERVER, method="DELETE")
        self.assertEqual(response.status, 202)
        connection.pump.flush()
        self.assertEqual(connection.response.status, 409)
        self.assertEqual(connection.response.json()["error"],
                         "The transfer was cancelled on the destination.")
        self.assertEqual(statuses(received_events), ["failure"])
        self.assertIsNone(pair.destination.node.registry.get(SERVER))
        self.assertEqual(pair.reports(), [("failure", 204)])
        response = pair.destination.get("/api/transfers/" + SERVER, method="DELETE")
        self.assertEqual(response.status, 404)

    def test_write_guard_while_receiving(self) -> None:
        """
        While the server is received, file changes answer 409 with the guard's text (api.md
        §2.9); reads work.
        """
        pair = self.pair()
        framing = Framing(checksum_archive=False)
        connection = Connection(pair.destination.site)
        connection.send(request_head(pair.token(), framing.content_type)
                        + chunk(framing.head() + b"\x1f\x8b"))
        response = pair.destination.get(
            "/api/servers/{}/files/write?file=x.txt".format(SERVER), method="POST", body=b"x")
        self.assertEqual((response.status, response.json()["error"]), (409, RECEIVING_MESSAGE))
        response = pair.destination.get(
            "/api/servers/{}/files/list-directory?directory=/".format(SERVER))
        self.assertEqual(response.status, 200)
        connection.close()
        self.assertIsNone(pair.destination.node.registry.get(SERVER))


class DestinationTests(SynchronousTestCase):
    """
    ``POST /api/transfers`` sent by hand (transfers.md §4), as an upstream source would.
    """

    def setUp(self) -> None:
        self.pair = Pair(FilePath(self.mktemp()))
        self.h: Harness = self.pair.destination

    def post(self, content_type: bytes, payload: bytes, token: str | None = "default",
             **kwargs: Any) -> Any:
        if token == "default":
            token = self.pair.token()
        return post_transfer(self.h, content_type, payload,
                             authorization=None if token is None else "Bearer " + token,
                             **kwargs)

    def test_upstream_source(self) -> None:
        """
        transfers.md §11.2: upstream's body (60-hex boundary, chunked, ``archive`` +
        ``checksum``) is accepted: 200 with an empty body.
        """
        archive = tar_gz({"a/b.txt": b"hello", "c.bin": os.urandom(70_000)})
        content_type, payload = upstream_body(archive)
        response = self.post(content_type, payload, pieces=1000)
        self.assertEqual((response.status, response.body), (200, b""))
        volume = os.path.join(self.h.config.system.data, SERVER)
        self.assertEqual(tree(volume)["a/b.txt"], (b"hello", 0o644))

    def test_content_length_body(self) -> None:
        """
        A body with a ``Content-Length`` instead of chunks works the same.
        """
        archive = tar_gz({"x": b"1"})
        content_type, payload = upstream_body(archive)
        self.assertEqual(self.post(content_type, payload, chunk=False).status, 200)

    def test_auth_failures_are_answered_at_once(self) -> None:
        """
        No ``Bearer`` header: 401 with ``WWW-Authenticate``; a forged, expired, wrong-kind or
        wrong-server token: 403 — all answered from the headers, with ``Connection: close``,
        before the panel is asked anything or a byte of the body is used.
        """
        archive = tar_gz({"x": b"1" * 100_000})
        content_type, payload = upstream_body(archive)
        response = self.post(content_type, payload, token=None)
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("www-authenticate"), "Bearer")
        self.assertEqual(response.header("connection"), "close")
        for token in (self.pair.token(wrong_key=True), self.pair.token(expired=True),
                      self.pair.token(extra_claims={"permissions": ["*"]}),
                      self.pair.token(extra_claims={"server_uuid": OTHER}), "garbage"):
            response = self.post(content_type, payload, token=token)
            self.assertEqual(response.status, 403, token)
            self.assertEqual(response.json()["error"],
                             "The provided token is invalid or has expired.")
        self.assertEqual(self.pair.panel.received, [])
        self.assertEqual(os.listdir(self.h.config.system.data), [])

    def test_configuration_fetch_fails(self) -> None:
        """
        The panel does not know the server: failure reported, 502, nothing registered.
        """
        token = self.pair.token(extra_claims={"sub": OTHER})
        content_type, payload = upstream_body(tar_gz({"x": b"1"}))
        response = self.post(content_type, payload, token=token)
        self.assertEqual((response.status, response.json()["error"]),
                         (502, "Could not fetch the server configuration from the panel."))
        self.assertIsNone(self.h.node.registry.get(OTHER))
        self.assertEqual([r.path for r in self.pair.panel.received][-1],
                         "/servers/{}/transfer/failure".format(OTHER))

    def test_bad_content_type(self) -> None:
        """
        Not multipart: 400 with upstream's text; the registration is undone and the failure
        reported.
        """
        response = self.post(b"application/octet-stream", b"xx")
        self.assertEqual((response.status, response.json()["error"]),
                         (400, "Invalid content type, expected multipart/form-data."))
        self.assertIsNone(self.h.node.registry.get(SERVER))
        self.assertFalse(os.path.exists(os.path.join(self.h.config.system.data, SERVER)))
        self.assertEqual(self.pair.reports(), [("failure", 204)])

    def test_protocol_errors(self) -> None:
        """
        transfers.md §11.4 over HTTP: checksum before archive, a missing checksum and a
        mismatch are 400 with upstream's texts, each cleaned up.
        """
        archive = tar_gz({"x": b"1"})
        framing = Framing(checksum_archive=False)
        boundary = framing.boundary
        checksum_first = (b"--" + boundary + b'\r\nContent-Disposition: form-data; '
                          b'name="checksum"\r\n\r\n' + b"00" * 32 + b"\r\n" + framing.head()
                          + archive + framing.closing())
        cases = [
            (checksum_first, "archive must be sent before the checksum"),
            (framing.head() + archive + framing.closing(), "missing archive or checksum"),
            (body(framing, archive, "00" * 32), "checksums don't match"),
        ]
        for payload, message in cases:
            self.pair.panel.servers[SERVER].transfer = True
            response = self.post(framing.content_type, payload)
            self.assertEqual((response.status, response.json()["error"]), (400, message))
            self.assertIsNone(self.h.node.registry.get(SERVER))
            self.assertFalse(os.path.exists(os.path.join(self.h.config.system.data, SERVER)))

    def test_truncated_body(self) -> None:
        """
        A body that ends (or a connection that drops) before the closing delimiter fails and
        leaves nothing.
        """
        archive = tar_gz({"x": b"1" * 10_000})
        framing = Framing(checksum_archive=False)
        response = self.post(framing.content_type, framing.head() + archive[:500])
        self.assertEqual((response.status, response.json()["error"]),
                         (400, "The transfer body ended before its closing delimiter."))
        connection = Connection(self.h.site)
        connection.send(request_head(self.pair.token(), framing.content_type)
                        + chunk(framing.head() + archive[:500]))
        self.assertIsNotNone(self.h.node.registry.get(SERVER))
        connection.close()
        self.assertIsNone(self.h.node.registry.get(SERVER))
        self.assertFalse(os.path.exists(os.path.join(self.h.config.system.data, SERVER)))

    def test_body_that_never_ends(self) -> None:
        """
        A source that stops sending: after 10 minutes without a byte the connection is closed,
        the transfer fails and is cleaned up (§4.9).
        """
        framing = Framing(checksum_archive=False)
        connection = Connection(self.h.site)
        connection.send(request_head(self.pair.token(), framing.content_type)
                        + chunk(framing.head() + b"\x1f\x8b\x08"))
        self.assertIsNotNone(self.h.node.registry.get(SERVER))
        self.h.clock.advance(599)
        connection.pump.flush()
        self.assertIsNotNone(self.h.node.registry.get(SERVER))
        self.h.clock.advance(2)
        connection.pump.flush()
        self.assertIsNone(self.h.node.registry.get(SERVER))
        self.assertEqual(self.pair.reports(), [("failure", 204)])

    def test_flood_after_the_closing_delimiter(self) -> None:
        """
        Megabytes after the closing delimiter: the transfer still succeeds, its answer is
        written at once and the connection closed; the flood is dropped, not kept.
        """
        archive = tar_gz({"x": b"1"})
        content_type, payload = upstream_body(archive)
        response = self.post(content_type, payload + b"\x00" * (4 * 1024 * 1024))
        self.assertEqual(response.status, 200)
        self.assertIsNotNone(self.h.node.registry.get(SERVER))

    def test_hostile_member_names(self) -> None:
        """
        ``../`` and absolute names are clamped inside the volume; links and devices are skipped;
        nothing is written outside the volume.
        """
        content_type, payload = upstream_body(hostile_tar_gz())
        self.assertEqual(self.post(content_type, payload).status, 200)
        volume = os.path.join(self.h.config.system.data, SERVER)
        self.assertEqual(sorted(tree(volume)), ["abs.txt", "escape.txt"])
        self.assertEqual(os.listdir(self.h.config.system.data), [SERVER])
        self.assertFalse(os.path.lexists(os.path.join(volume, "evil")))

    def test_second_transfer_is_refused(self) -> None:
        """
        A second ``POST /api/transfers`` for a server being received: 409, the first goes on.
        """
        framing = Framing(checksum_archive=False)
        first = Connection(self.h.site)
        first.send(request_head(self.pair.token(), framing.content_type) + chunk(framing.head()))
        content_type, payload = upstream_body(tar_gz({"x": b"1"}))
        response = self.post(content_type, payload)
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "A transfer for this server is already in progress."))
        self.assertIsNotNone(self.h.node.registry.get(SERVER))
        first.close()

    def test_live_server_is_never_overwritten(self) -> None:
        """
        A token for a server that runs on this node: 409, the server and its files untouched.
        """
        server = self.h.add_server(SERVER)
        env = FakeEnvironment()
        server.environment = env
        env.set_state("running")
        write_files(server.volume.root, {"keep.txt": (b"mine", 0o644)})
        content_type, payload = upstream_body(tar_gz({"x": b"1"}))
        response = self.post(content_type, payload)
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "This server already exists on this node."))
        self.assertIs(self.h.node.registry.get(SERVER), server)
        self.assertEqual(tree(server.volume.root), {"keep.txt": (b"mine", 0o644)})

    def test_stale_copy_is_replaced(self) -> None:
        """
        An offline, idle copy of the server (left by an earlier transfer) is dropped with its
        files, and the transfer proceeds.
        """
        stale = self.h.add_server(SERVER)
        write_files(stale.volume.root, {"stale.txt": (b"old", 0o644)})
        content_type, payload = upstream_body(tar_gz({"new.txt": b"new"}))
        self.assertEqual(self.post(content_type, payload).status, 200)
        current = self.h.node.registry.get(SERVER)
        assert current is not None
        self.assertIsNot(current, stale)
        self.assertEqual(set(tree(current.volume.root)), {"new.txt"})

    def test_other_methods(self) -> None:
        """
        ``GET /api/transfers`` is a 405; ``DELETE /api/transfers/{uuid}`` needs the node token.
        """
        self.assertEqual(self.h.get("/api/transfers").status, 405)
        response = self.h.get("/api/transfers/" + SERVER, method="DELETE",
                              headers={"Authorization": None})  # type: ignore[dict-item]
        self.assertEqual(response.status, 401)
        self.h.add_server(SERVER)
        response = self.h.get("/api/transfers/" + SERVER, method="DELETE")
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "Server is not currently being transferred."))


class PanelReportTests(SynchronousTestCase):
    """
    The two remote calls (panel.md §3.6): ``null`` bodies, a 409 is raised at once.
    """

    def test_report_bodies(self) -> None:
        """
        Both reports are ``POST`` with the literal body ``null``.
        """
        h = Harness(FilePath(self.mktemp()), SERVER)
        h.state.servers[SERVER].transfer = True
        self.successResultOf(_run(h.node.panel.report_transfer_success(SERVER)))
        failure = self.failureResultOf(_run(h.node.panel.report_transfer_failure(SERVER)))
        self.assertEqual(failure.value.status, 409)
        self.assertEqual([(r.method, r.raw_body) for r in h.state.received],
                         [("POST", b"null"), ("POST", b"null")])
        self.assertEqual(TOKEN, h.config.token)


def _run(coroutine: Any) -> Any:
    from twisted.internet.defer import Deferred
    return Deferred.fromCoroutine(coroutine)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
