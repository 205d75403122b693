"""
Tests for the panel client (panel.md §1–§3, §6) against the development
panel in memory, on a fake clock.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted import __version__
from wings_twisted.devpanel.faults import Drop, Respond
from wings_twisted.panel import PanelClient, PanelError, _transport_detail

from ..support import SERVER, TOKEN, TOKEN_ID, Harness

UUIDS = ["{:08x}-0000-4000-8000-000000000000".format(i) for i in range(1, 4)]


class PanelClientTests(SynchronousTestCase):
    """
    ``PanelClient``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, *UUIDS)
        self.panel: PanelClient = self.h.node.panel
        self.clock = self.h.clock

    def drive(self, coroutine):
        d = Deferred.fromCoroutine(coroutine)
        results: list = []
        d.addBoth(results.append)
        for _ in range(200):
            if results:
                break
            self.h.panel_http.flush()
            self.clock.advance(0.5)
        return results[0]

    def test_headers(self) -> None:
        """
        Bearer ``token_id.token``, the vnd Accept, JSON content type and the
        Wings user agent on every call.
        """
        self.drive(self.panel.get_server(SERVER))
        headers = self.h.state.received[-1].headers
        self.assertEqual(headers["authorization"], "Bearer {}.{}".format(TOKEN_ID, TOKEN))
        self.assertEqual(headers["accept"], "application/vnd.pterodactyl.v1+json")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["user-agent"],
                         "Pterodactyl Wings/v{} (id:{})".format(__version__, TOKEN_ID))

    def test_post_without_data_sends_null(self) -> None:
        """
        ``POST /servers/reset`` carries the literal body ``null``.
        """
        self.drive(self.panel.reset_servers())
        self.assertEqual(self.h.state.received[-1].raw_body, b"null")
        self.assertEqual(self.h.state.reset_count, 1)

    def test_pagination(self) -> None:
        """
        Page 0 first, then the remaining pages; every server is returned.
        """
        entries = self.drive(self.panel.get_servers(per_page=1))
        self.assertEqual(sorted(e["uuid"] for e in entries), sorted([SERVER] + UUIDS))
        pages = [r.query["page"][0] for r in self.h.state.received]
        self.assertEqual(pages[0], "0")
        self.assertEqual(sorted(pages[1:]), ["2", "3", "4"])

    def test_retry_then_success(self) -> None:
        """
        500, 502 and a dropped connection are retried with backoff.
        """
        self.h.state.faults.add("GET", "/servers/" + SERVER, Respond(500), Respond(502), Drop())
        answer = self.drive(self.panel.get_server(SERVER))
        self.assertEqual(answer["settings"]["uuid"], SERVER)
        self.assertEqual(len(self.h.state.received), 4)

    def test_no_retry_on_4xx(self) -> None:
        """
        A 4xx fails at once with the panel's error decoded.
        """
        failure = self.drive(self.panel.get_server("00000000-0000-4000-8000-00000000dead"))
        self.assertIsInstance(failure.value, PanelError)
        self.assertEqual(failure.value.status, 404)
        self.assertIn("Error response from Panel: ", str(failure.value))
        self.assertIn("(HTTP/404)", str(failure.value))
        self.assertEqual(failure.value.url,
                         "http://panel.test/api/remote/servers/00000000-0000-4000-8000-00000000dead")
        self.assertEqual(len(self.h.state.received), 1)

    def test_transport_error_is_readable(self) -> None:
        """
        A failed attempt is described by the reasons Twisted wraps, in one
        line, with the URL it was for.
        """
        self.h.state.faults.add("GET", "/servers/" + SERVER, *[Drop()] * 100)
        failure = self.drive(self.panel.get_server(SERVER))
        self.assertEqual(failure.value.status, 0)
        self.assertEqual(failure.value.url, "http://panel.test/api/remote/servers/" + SERVER)
        self.assertNotIn("Failure", str(failure.value))
        lost = ConnectionLost("reset")
        error = ResponseNeverReceived([Failure(lost)])
        self.assertEqual(_transport_detail(error), str(lost))

    def test_budget(self) -> None:
        """
        A panel that keeps failing is given up on within the 30 s budget.
        """
        self.h.state.faults.add("GET", "/servers/" + SERVER, *[Respond(503)] * 100)
        start = self.clock.seconds()
        failure = self.drive(self.panel.get_server(SERVER))
        self.assertIsInstance(failure.value, PanelError)
        self.assertEqual(failure.value.status, 503)
        self.assertLessEqual(self.clock.seconds() - start, 31)
        self.assertGreaterEqual(len(self.h.state.received), 6)

    def test_garbage_page_numbers_are_panel_errors(self) -> None:
        """
        A listing whose ``meta`` page numbers are not small non-negative
        integers (``1e309`` parses as infinity, ``NaN``, ``1.5``, ``-1``, a
        billion pages, ``true``, ``"x"``, a list) is retried and then fails
        as a ``PanelError``, never an ``OverflowError`` or a flood of page
        requests.
        """
        for value in (b"1e309", b"NaN", b"1.5", b"-1", b"1000000000", b"true", b'"x"', b"[2]"):
            body = b'{"data": [], "meta": {"current_page": 1, "last_page": ' + value + b"}}"
            self.h.state.faults.add("GET", "/servers", *[Respond(200, body)] * 100)
            failure = self.drive(self.panel.get_servers())
            self.assertIsInstance(failure.value, PanelError, value)
            self.assertEqual(failure.value.code, "_InvalidResponse")
            self.h.state.faults.clear()
        self.assertLess(len(self.h.state.received), 8 * 30)

    def test_garbage_is_retried_then_accepted(self) -> None:
        """
        A garbage answer (invalid JSON, no ``data`` array, a non-object
        server document) is retried like a 5xx, so a panel that recovers
        within the budget is used.
        """
        self.h.state.faults.add("GET", "/servers", Respond(200, b"{not json"),
                                Respond(200, {"data": 5}),
                                Respond(200, {"data": [], "meta": {"last_page": 1e308 * 10}}))
        entries = self.drive(self.panel.get_servers(per_page=50))
        self.assertEqual(sorted(e["uuid"] for e in entries), sorted([SERVER] + UUIDS))
        self.h.state.faults.add("GET", "/servers/" + SERVER, Respond(200, [1, 2]))
        answer = self.drive(self.panel.get_server(SERVER))
        self.assertEqual(answer["settings"]["uuid"], SERVER)

    def test_install_script_types(self) -> None:
        """
        An install script whose ``entrypoint`` or ``container_image`` is not
        a string is a panel failure.
        """
        self.h.state.faults.add("GET", "/servers/{}/install".format(SERVER),
                                *[Respond(200, {"script": "x", "entrypoint": ["bash"]})] * 100)
        failure = self.drive(self.panel.get_install_script(SERVER))
        self.assertIsInstance(failure.value, PanelError)

    def test_backoff_waits(self) -> None:
        """
        With no jitter the waits are 0.5, 0.75, 1.125 … seconds, capped at 12.
        """
        panel = self.panel
        self.assertEqual([round(panel._wait(n), 3) for n in (0, 1, 2)], [0.5, 0.75, 1.125])
        self.assertEqual(panel._wait(20), 12.0)

    def test_activity(self) -> None:
        """
        Activity records are posted as ``{"data": [...]}``.
        """
        record = {"user": None, "server": SERVER, "event": "server:file.uploaded",
                  "metadata": {"file": "a", "directory": "."}, "ip": "127.0.0.1",
                  "timestamp": "2026-01-02T15:04:05Z"}
        self.drive(self.panel.send_activity([record]))
        self.assertEqual(json.loads(self.h.state.received[-1].raw_body), {"data": [record]})
        self.assertEqual(len(self.h.state.activity), 1)
