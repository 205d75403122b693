"""
Tests for ``wings_twisted.devpanel`` (the development Panel), driven in
memory through ``treq.testing.StubTreq`` with a ``Clock``.  Its command line
and the example game: ``tests/integration/test_devpanel_commands.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import jwt
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

import wings_twisted
from wings_twisted.devpanel import (
    Delay,
    DevPanelState,
    Drop,
    Respond,
    StateError,
    build_resource,
    build_server,
    listen,
    mint_download_backup,
    mint_download_file,
    mint_transfer,
    mint_upload,
    mint_websocket,
    signed_url,
    websocket_url,
)
from wings_twisted.devpanel.sftp import key_blob
from wings_twisted.devpanel.tokens import TokenUser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(wings_twisted.__file__)))
CONFIG = os.path.join(ROOT, "conf", "devpanel.yml")
TOKEN_ID = "testTokenId00001"
TOKEN = "T" * 32 + "0123456789abcdefghijklmnopqrstuv"
AUTH = "Bearer {}.{}".format(TOKEN_ID, TOKEN)
SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
OTHER = "11111111-2222-4333-8444-555555555555"
THIRD = "99999999-8888-4777-8666-555555555555"
OWNER = "3f6c1a2b-7d4e-4f5a-8b9c-0d1e2f3a4b5c"
HELPER = "6d7e8f90-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
BASE = "http://panel.test"
NOW = 1_700_000_000
ED25519_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
).decode("ascii")
OTHER_KEY = "ssh-ed25519 " + base64.b64encode(
    b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(1, 33))
).decode("ascii")


def make_state(servers: int = 1) -> DevPanelState:
    """
    A state with ``servers`` servers (``SERVER`` first), an owner and a
    helper user.
    """
    state = DevPanelState.from_dict(
        {
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://node.test:8080", "url": BASE},
            "users": {
                "admin": {
                    "uuid": OWNER,
                    "id": 1,
                    "password": "admin",
                    "public_keys": [ED25519_KEY + " me@laptop"],
                    "permissions": {SERVER: ["*"]},
                },
                "helper": {
                    "uuid": HELPER,
                    "id": 2,
                    "password": "helper",
                    "permissions": {SERVER: ["websocket.connect", "control.console", "file.read"]},
                },
            },
        }
    )
    for uuid in [SERVER, OTHER, THIRD][:servers]:
        state.add_server(uuid)
    return state


class _Panel:
    """
    In-memory client of a development Panel.
    """

    def __init__(self, state: DevPanelState, clock: Clock | None = None) -> None:
        self.state = state
        self.clock = clock or Clock()
        self.clock.advance(NOW)
        self.stub = StubTreq(build_resource(state, self.clock))

    def start(self, method: str, path: str, body: Any = None, auth: str | None = AUTH, **headers: str) -> Any:
        """
        Send a request; returns the response Deferred.
        """
        sent = {"Accept": "application/vnd.pterodactyl.v1+json", "Content-Type": "application/json"}
        sent.update(headers)
        if auth is not None:
            sent["Authorization"] = auth
        data = None if method == "GET" else (body if isinstance(body, bytes) else json.dumps(body).encode())
        return self.stub.request(method, BASE + path, data=data, headers=sent)

    def finish(self, case: SynchronousTestCase, d: Any) -> tuple[int, Any, bytes]:
        """
        Flush the in-memory connection and return (status, headers, body).
        """
        self.stub.flush()
        response = case.successResultOf(d)
        body = case.successResultOf(self.stub.content(response))
        return response.code, response.headers, body

    def call(
        self, case: SynchronousTestCase, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any, bytes]:
        """
        Send a request and wait for the answer.
        """
        return self.finish(case, self.start(method, path, body, **kw))


def error_of(body: bytes) -> dict[str, Any]:
    """
    The first element of a Panel error body.
    """
    errors = json.loads(body)["errors"]
    return errors[0]


class StateTests(SynchronousTestCase):
    """
    Fixtures: the server builder and the YAML loader.
    """

    def test_builder_defaults(self) -> None:
        """
        A server built without overrides has the §9.2 defaults.
        """
        server = build_server(SERVER)
        s, p = server.settings, server.process_configuration
        self.assertTrue(s["skip_egg_scripts"])
        self.assertEqual(p["stop"], {"type": "command", "value": "stop"})
        self.assertEqual(p["startup"]["done"], ["Server is ready"])
        self.assertEqual(s["container"]["image"], "~test/image")
        self.assertEqual(s["allocations"]["default"], {"ip": "127.0.0.1", "port": 25565})
        self.assertEqual(s["allocations"]["mappings"], {"127.0.0.1": [25565]})
        self.assertEqual((s["build"]["memory_limit"], s["build"]["disk_space"], s["build"]["cpu_limit"]), (0, 0, 0))
        self.assertEqual(s["environment"]["P_SERVER_UUID"], SERVER)
        self.assertEqual(s["environment"]["STARTUP"], s["invocation"])
        self.assertEqual(s["uuid"], SERVER)
        self.assertFalse(s["suspended"])
        self.assertEqual(s["mounts"], [])
        self.assertIsNone(server.status)

    def test_overrides_change_only_what_they_name(self) -> None:
        """
        Shortcuts and deep-merged ``settings`` leave the other defaults alone.
        """
        server = build_server(
            SERVER,
            name="Survival",
            environment={"MAX_PLAYERS": "5"},
            invocation="run {{MAX_PLAYERS}}",
            stop="^C",
            done=["a", "b"],
            settings={"build": {"memory_limit": 1024}},
        )
        s = server.settings
        self.assertEqual(s["meta"]["name"], "Survival")
        self.assertEqual(s["environment"]["MAX_PLAYERS"], "5")
        self.assertEqual(s["environment"]["STARTUP"], "run {{MAX_PLAYERS}}")
        self.assertEqual(s["build"]["memory_limit"], 1024)
        self.assertEqual(s["build"]["io_weight"], 500)
        self.assertEqual(server.process_configuration["stop"], {"type": "signal", "value": "C"})
        self.assertEqual(server.process_configuration["startup"]["done"], ["a", "b"])

    def test_unknown_server_key(self) -> None:
        """
        A misspelt server key is an error, not silently ignored.
        """
        self.assertRaises(StateError, build_server, SERVER, nmae="x")

    def test_token_with_dot_rejected(self) -> None:
        """
        A node token containing ``.`` cannot form a valid bearer value.
        """
        self.assertRaises(StateError, DevPanelState.from_dict, {"node": {"token_id": "a.b", "token": "c"}})

    def test_shipped_config(self) -> None:
        """
        ``conf/devpanel.yml`` loads: the example server runs the example game
        and the admin owns it.
        """
        state = DevPanelState.from_yaml(CONFIG)
        self.assertEqual(state.node.token_id, "devTokenId000001")
        self.assertEqual(len(state.node.token), 64)
        server = state.servers[SERVER]
        self.assertEqual(server.settings["meta"]["name"], "Example game")
        self.assertIn("wings_twisted.devpanel.examplegame", server.settings["invocation"])
        self.assertIn("{{MAX_PLAYERS}}", server.settings["invocation"])
        self.assertIn("MAX_PLAYERS", server.settings["environment"])
        self.assertEqual(server.process_configuration["startup"]["done"], ["Server is ready"])
        admin = state.users["admin"]
        self.assertEqual((admin.id, admin.password, admin.permissions_for(SERVER)), (1, "admin", ["*"]))
        self.assertNotIn("*", state.users["helper"].permissions_for(SERVER) or [])

    def test_missing_file(self) -> None:
        """
        An unreadable fixture file raises ``StateError`` naming the path.
        """
        e = self.assertRaises(StateError, DevPanelState.from_yaml, self.mktemp())
        self.assertIn("cannot read", str(e))


class AuthenticationTests(SynchronousTestCase):
    """
    The ``DaemonAuthenticate`` middleware (panel.md §1.4).
    """

    def setUp(self) -> None:
        self.panel = _Panel(make_state())

    def test_missing_header(self) -> None:
        """
        No bearer token: 401 with ``WWW-Authenticate: Bearer`` and the error
        JSON, status as a string.
        """
        status, headers, body = self.panel.call(self, "GET", "/api/remote/servers", auth=None)
        self.assertEqual(status, 401)
        self.assertEqual(headers.getRawHeaders("WWW-Authenticate"), ["Bearer"])
        self.assertEqual(
            json.loads(body),
            {
                "errors": [
                    {
                        "code": "HttpException",
                        "status": "401",
                        "detail": "Access to this endpoint must include an Authorization header.",
                    }
                ]
            },
        )

    def test_not_bearer(self) -> None:
        """
        A non-bearer scheme counts as no token.
        """
        status, _, _ = self.panel.call(self, "GET", "/api/remote/servers", auth="Basic YWJjOmRlZg==")
        self.assertEqual(status, 401)

    def test_bad_format(self) -> None:
        """
        A token that is not ``<id>.<secret>`` with both parts non-empty is 400.
        """
        for value in ("Bearer abc", "Bearer a.b.c", "Bearer .secret", "Bearer id."):
            status, _, body = self.panel.call(self, "GET", "/api/remote/servers", auth=value)
            self.assertEqual(status, 400, value)
            self.assertEqual(error_of(body)["detail"], "The Authorization header provided was not in a valid format.")
            self.assertEqual(error_of(body)["status"], "400")

    def test_wrong_credentials(self) -> None:
        """
        An unknown token id or a wrong secret is 403.
        """
        for value in ("Bearer other.{}".format(TOKEN), "Bearer {}.wrong".format(TOKEN_ID)):
            status, _, body = self.panel.call(self, "GET", "/api/remote/servers", auth=value)
            self.assertEqual(status, 403, value)
            self.assertEqual(error_of(body)["detail"], "You are not authorized to access this resource.")

    def test_ok_and_recorded(self) -> None:
        """
        Valid credentials pass; the request is recorded with its headers.
        """
        agent = {"User-Agent": "Pterodactyl Wings/v1"}
        status, _, _ = self.panel.call(self, "GET", "/api/remote/servers?page=0", **agent)
        self.assertEqual(status, 200)
        [record] = self.panel.state.requests("GET", "/servers")
        self.assertEqual(record.route, "/servers")
        self.assertEqual(record.query, {"page": ["0"]})
        self.assertEqual(record.headers["user-agent"], "Pterodactyl Wings/v1")
        self.assertEqual(record.headers["accept"], "application/vnd.pterodactyl.v1+json")
        self.assertEqual(record.status, 200)
        self.assertEqual(record.timestamp, NOW)

    def test_head_and_form_bodies(self) -> None:
        """
        ``HEAD`` is answered wherever ``GET`` is, without a body; a
        form-encoded body is not mistaken for query parameters.
        """
        status, _, body = self.panel.call(self, "HEAD", "/api/remote/servers")
        self.assertEqual((status, body), (200, b""))
        status, _, _ = self.panel.call(
            self, "POST", "/api/remote/servers/reset", b"page=3", **{"Content-Type": "application/x-www-form-urlencoded"}
        )
        self.assertEqual(status, 204)
        self.assertEqual(self.panel.state.received[-1].query, {})
        self.assertEqual(self.panel.state.received[-1].raw_body, b"page=3")

    def test_unknown_route_before_auth(self) -> None:
        """
        Unknown routes and wrong methods are 404 error JSON, with or without
        credentials (routing happens before the middleware).
        """
        for path, method in (("/api/remote/nope", "GET"), ("/api/remote/servers", "DELETE"), ("/elsewhere", "GET")):
            for auth in (None, AUTH):
                status, _, body = self.panel.call(self, method, path, auth=auth)
                self.assertEqual(status, 404, (method, path))
                self.assertEqual(error_of(body)["code"], "NotFoundHttpException")


class ServerListingTests(SynchronousTestCase):
    """
    ``GET /servers`` pagination (panel.md §3.1, §9.3).
    """

    def listing(self, panel: _Panel, query: str) -> dict[str, Any]:
        """
        The decoded ``GET /servers`` body for ``query``; asserts a 200.
        """
        status, _, body = panel.call(self, "GET", "/api/remote/servers" + query)
        self.assertEqual(status, 200)
        return json.loads(body)

    def test_empty_page_zero(self) -> None:
        """
        ``page=0`` on an empty node answers page 1 with ``last_page`` 1.
        """
        result = self.listing(_Panel(make_state(servers=0)), "?page=0&per_page=50")
        self.assertEqual(result["data"], [])
        meta = result["meta"]
        self.assertEqual((meta["current_page"], meta["last_page"], meta["total"]), (1, 1, 0))
        self.assertEqual(meta["per_page"], 50)
        self.assertIsNone(meta["from"])
        self.assertIsNone(meta["to"])
        self.assertIn("links", result)

    def test_multi_page(self) -> None:
        """
        Three servers with ``per_page=1`` span three pages, in order, with an
        integer ``per_page`` and Laravel's links.
        """
        panel = _Panel(make_state(servers=3))
        seen = []
        for page in (0, 2, 3):
            result = self.listing(panel, "?page={}&per_page=1".format(page))
            meta = result["meta"]
            self.assertEqual(meta["current_page"], max(page, 1))
            self.assertEqual(meta["last_page"], 3)
            self.assertEqual(meta["per_page"], 1)
            self.assertIsInstance(meta["per_page"], int)
            self.assertEqual(meta["total"], 3)
            self.assertEqual(meta["from"], meta["current_page"])
            self.assertEqual(meta["to"], meta["current_page"])
            [entry] = result["data"]
            self.assertEqual(set(entry), {"uuid", "settings", "process_configuration"})
            seen.append(entry["uuid"])
        self.assertEqual(seen, [SERVER, OTHER, THIRD])
        first = self.listing(panel, "?page=1&per_page=1")
        self.assertEqual(first["links"]["next"], BASE + "/api/remote/servers?page=2")
        self.assertIsNone(first["links"]["prev"])

    def test_past_the_end_and_bad_values(self) -> None:
        """
        A page past the end is empty; a negative or non-numeric page means 1;
        a non-numeric ``per_page`` falls back to 15 like Eloquent.
        """
        panel = _Panel(make_state(servers=3))
        self.assertEqual(self.listing(panel, "?page=9&per_page=2")["data"], [])
        self.assertEqual(self.listing(panel, "?page=-4")["meta"]["current_page"], 1)
        self.assertEqual(self.listing(panel, "?page=x")["meta"]["current_page"], 1)
        self.assertEqual(self.listing(panel, "?per_page=abc")["meta"]["per_page"], 15)
        self.assertEqual(self.listing(panel, "")["meta"]["per_page"], 50)


class ServerRouteTests(SynchronousTestCase):
    """
    Configuration, install, reset and transfer routes (panel.md §3).
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.panel = _Panel(self.state)

    def test_get_server(self) -> None:
        """
        A known server answers ``{settings, process_configuration}``.
        """
        status, _, body = self.panel.call(self, "GET", "/api/remote/servers/" + SERVER)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), self.state.servers[SERVER].configuration())

    def test_unknown_server(self) -> None:
        """
        Unknown servers are 404 on the configuration and install routes.
        """
        for method, path in (("GET", ""), ("GET", "/install"), ("POST", "/transfer/success")):
            status, _, body = self.panel.call(self, method, "/api/remote/servers/" + OTHER + path, body=None)
            self.assertEqual(status, 404)
            self.assertEqual(
                error_of(body),
                {
                    "code": "NotFoundHttpException",
                    "status": "404",
                    "detail": "The requested resource could not be found on the server.",
                },
            )

    def test_install_script(self) -> None:
        """
        ``GET …/install`` returns the install script object.
        """
        status, _, body = self.panel.call(self, "GET", "/api/remote/servers/{}/install".format(SERVER))
        self.assertEqual(status, 200)
        self.assertEqual(set(json.loads(body)), {"container_image", "entrypoint", "script"})

    def test_install_status_validation(self) -> None:
        """
        ``successful`` must be present and a boolean: 422 otherwise.
        """
        path = "/api/remote/servers/{}/install".format(SERVER)
        for body in ({}, {"successful": "true"}, None, {"successful": True, "reinstall": "no"}):
            status, _, raw = self.panel.call(self, "POST", path, body)
            self.assertEqual(status, 422, body)
            self.assertEqual(error_of(raw)["code"], "ValidationException")
            self.assertEqual(error_of(raw)["status"], "422")
        self.assertEqual(self.state.install_reports, [])

    def test_install_status(self) -> None:
        """
        Results set ``status``: null on success, ``install_failed`` or
        ``reinstall_failed`` on failure, suspended stays suspended.
        """
        path = "/api/remote/servers/{}/install".format(SERVER)
        server = self.state.servers[SERVER]
        cases = [
            ({"successful": False, "reinstall": False}, "installing", "install_failed"),
            ({"successful": False, "reinstall": True}, None, "reinstall_failed"),
            ({"successful": True, "reinstall": False}, "installing", None),
            ({"successful": True}, "suspended", "suspended"),
        ]
        for body, before, after in cases:
            server.status = before
            status, _, raw = self.panel.call(self, "POST", path, body)
            self.assertEqual((status, raw), (204, b""))
            self.assertEqual(server.status, after, body)
        self.assertEqual(self.state.install_reports[0], {"server": SERVER, "successful": False, "reinstall": False})
        self.assertEqual(server.installed_at, NOW)

    def test_reset(self) -> None:
        """
        ``POST /servers/reset`` with a ``null`` body clears installing and
        restoring statuses only.
        """
        self.state.add_server(OTHER, status="restoring_backup")
        self.state.add_server(THIRD, status="install_failed")
        self.state.servers[SERVER].status = "installing"
        status, _, _ = self.panel.call(self, "POST", "/api/remote/servers/reset", b"null")
        self.assertEqual(status, 204)
        self.assertEqual([s.status for s in self.state.servers.values()], [None, None, "install_failed"])
        self.assertEqual(self.state.reset_count, 1)
        self.assertEqual(self.state.panel_events, [{"event": "server:backup.restore-failed", "server": OTHER}])

    def test_transfer(self) -> None:
        """
        Transfer reports are 409 unless a transfer is pending; the first
        report ends it.
        """
        path = "/api/remote/servers/{}/transfer/success".format(SERVER)
        status, _, body = self.panel.call(self, "POST", path, b"null")
        self.assertEqual(status, 409)
        self.assertEqual(error_of(body)["detail"], "Server is not being transferred.")
        self.state.servers[SERVER].transfer = True
        self.assertEqual(self.panel.call(self, "POST", path, b"null")[0], 204)
        self.assertEqual(self.panel.call(self, "POST", path.replace("success", "failure"), b"null")[0], 409)
        self.assertEqual(self.state.transfer_reports, [{"server": SERVER, "successful": True}])


class ActivityTests(SynchronousTestCase):
    """
    ``POST /activity`` (panel.md §6.3).
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.panel = _Panel(self.state)

    def item(self, **changes: Any) -> dict[str, Any]:
        """
        A valid activity item with ``changes``; ``...`` removes a key.
        """
        item: dict[str, Any] = {
            "user": OWNER,
            "server": SERVER,
            "event": "server:console.command",
            "metadata": {"command": "say hi"},
            "ip": "198.51.100.7",
            "timestamp": "2026-01-02T15:04:05.123456789Z",
        }
        item.update(changes)
        return {k: v for k, v in item.items() if v is not ...}

    def test_accepts_and_filters(self) -> None:
        """
        Valid items are stored; other servers and non-``server:`` events are
        dropped; an empty ip becomes 127.0.0.1; 200 with an empty body.
        """
        data = [
            self.item(),
            self.item(user=None, ip="", metadata=None, timestamp="2026-01-02T15:04:00Z"),
            self.item(server=OTHER),
            self.item(event="auth:login"),
        ]
        status, _, body = self.panel.call(self, "POST", "/api/remote/activity", {"data": data})
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(len(self.state.activity), 2)
        first, second = self.state.activity
        self.assertEqual(first["actor"], OWNER)
        self.assertEqual(first["when"], 1767366245.0)
        self.assertEqual(second["ip"], "127.0.0.1")
        self.assertEqual(second["metadata"], {})
        self.assertIsNone(second["actor"])

    def test_unparsable_timestamp(self) -> None:
        """
        A fraction before ``+00:00`` is stored with the current time and the
        original value in the metadata.
        """
        data = [self.item(timestamp="2026-01-02T15:04:05.5+00:00")]
        self.assertEqual(self.panel.call(self, "POST", "/api/remote/activity", {"data": data})[0], 200)
        [stored] = self.state.activity
        self.assertEqual(stored["when"], NOW)
        self.assertEqual(stored["metadata"]["original_timestamp"], "2026-01-02T15:04:05.5+00:00")

    def test_invalid(self) -> None:
        """
        Invalid items make the whole request 422, naming the field.
        """
        cases = [
            ({"data": [self.item(server="nope")]}, "data.0.server"),
            ({"data": [self.item(metadata=...)]}, "data.0.metadata"),
            ({"data": [self.item(ip="999.1.1.1")]}, "data.0.ip"),
            ({"data": [self.item(), self.item(timestamp=...)]}, "data.1.timestamp"),
            ({"data": [self.item(user="x")]}, "data.0.user"),
            ({"data": []}, "data"),
            ({}, "data"),
        ]
        for body, field in cases:
            status, _, raw = self.panel.call(self, "POST", "/api/remote/activity", body)
            self.assertEqual(status, 422, body)
            self.assertEqual(error_of(raw)["meta"]["source_field"], field)
        self.assertEqual(self.state.activity, [])

    def test_missing_user_key(self) -> None:
        """
        An item without a ``user`` key fails the request with a 500.
        """
        status, _, raw = self.panel.call(self, "POST", "/api/remote/activity", {"data": [self.item(user=...)]})
        self.assertEqual(status, 500)
        self.assertEqual(error_of(raw)["status"], "500")


class SftpAuthTests(SynchronousTestCase):
    """
    ``POST /sftp/auth`` (panel.md §4, sftp.md §3.6).
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.panel = _Panel(self.state)

    def login(self, username: str, password: str, kind: str = "password") -> tuple[int, bytes]:
        """
        One ``POST /sftp/auth`` the way the daemon sends it; (status, body).
        """
        body = {"type": kind, "username": username, "password": password, "ip": "198.51.100.7:5000",
                "session_id": "AA==", "client_version": "AA=="}
        status, _, raw = self.panel.call(self, "POST", "/api/remote/sftp/auth", body)
        return status, raw

    def test_password(self) -> None:
        """
        The owner logs in with ``<user>.<short id>`` and gets ``["*"]``.
        """
        status, raw = self.login("admin." + SERVER[:8], "admin")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(raw), {"user": OWNER, "server": SERVER, "permissions": ["*"]})

    def test_wrong_password_and_throttle(self) -> None:
        """
        Wrong passwords are 403; the sixth attempt within a minute is 429
        whatever the password; the window then expires.
        """
        for _ in range(5):
            self.assertEqual(self.login("admin." + SERVER[:8], "nope")[0], 403)
        status, raw = self.login("admin." + SERVER[:8], "admin")
        self.assertEqual(status, 429)
        self.assertIn("Too many login attempts", error_of(raw)["detail"])
        self.panel.clock.advance(60)
        self.assertEqual(self.login("admin." + SERVER[:8], "admin")[0], 200)

    def test_forced_throttle(self) -> None:
        """
        The ``force_sftp_throttle`` knob answers 429 at once.
        """
        self.state.force_sftp_throttle = True
        self.assertEqual(self.login("admin." + SERVER[:8], "admin")[0], 429)

    def test_usernames(self) -> None:
        """
        No server part → 400; no dot or unknown user/server → 403.
        """
        self.assertEqual(self.login("admin.", "admin")[0], 400)
        self.assertEqual(self.login(SERVER[:8], "admin")[0], 403)
        self.assertEqual(self.login("ghost." + SERVER[:8], "admin")[0], 403)
        self.assertEqual(self.login("admin.deadbeef", "admin")[0], 403)
        self.assertEqual(self.login("ADMIN." + SERVER, "admin")[0], 200)

    def test_validation(self) -> None:
        """
        Missing username/password or an unknown type is 422.
        """
        for body in ({"password": "x"}, {"username": "a.b"}, {"type": "kbd", "username": "a.b", "password": "x"}):
            status, _, _ = self.panel.call(self, "POST", "/api/remote/sftp/auth", body)
            self.assertEqual(status, 422, body)

    def test_public_key(self) -> None:
        """
        A registered key logs in; an unknown well-formed key is refused
        without counting; garbage is refused and counted.
        """
        name = "admin." + SERVER[:8]
        self.assertEqual(self.login(name, ED25519_KEY + "\n", "public_key")[0], 200)
        for _ in range(6):
            self.assertEqual(self.login(name, OTHER_KEY + "\n", "public_key")[0], 403)
        self.assertEqual(self.login(name, "admin")[0], 200)
        self.assertIsNone(key_blob("ssh-ed25519 !!!"))
        self.assertEqual(self.login(name, "ssh-ed25519 !!!", "public_key")[0], 403)
        self.assertEqual(self.state.sftp_throttle[SERVER[:8] + "|127.0.0.1"][0], 1)

    def test_permission_and_state(self) -> None:
        """
        A subuser without ``file.sftp`` is 403; a suspended, installing or
        transferring server is 409.
        """
        self.assertEqual(self.login("helper." + SERVER[:8], "helper")[0], 403)
        server = self.state.servers[SERVER]
        for change in ("suspended", "installing", "restoring_backup", "transfer"):
            server.status = None if change == "transfer" else change
            server.transfer = change == "transfer"
            status, raw = self.login("admin." + SERVER[:8], "admin")
            self.assertEqual(status, 409, change)
            self.assertEqual(error_of(raw)["code"], "ServerStateConflictException")


class BackupTests(SynchronousTestCase):
    """
    Backup routes (panel.md §5) and the S3 double (§9.6).
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.state.part_size = 4
        self.backup = "0b0b0b0b-1111-4222-8333-444444444444"
        self.state.add_backup(self.backup, server=SERVER)
        self.panel = _Panel(self.state)

    def test_backup_of_another_node(self) -> None:
        """
        Both backup routes refuse a backup whose server is not on this node
        (403) and an unknown one (404).
        """
        foreign = "0c0c0c0c-1111-4222-8333-444444444444"
        self.state.add_backup(foreign, server="99999999-1111-4222-8333-444444444444")
        report = {"successful": False}
        for method, suffix, body in (("GET", "?size=1", None), ("POST", "", report)):
            status, _, raw = self.panel.call(self, method, "/api/remote/backups/" + foreign + suffix, body)
            self.assertEqual(status, 403, method)
            self.assertIn(b"permission to access that backup", raw)
            self.assertEqual(self.panel.call(self, method, "/api/remote/backups/" + OTHER + suffix, body)[0],
                             404, method)

    def test_part_urls(self) -> None:
        """
        ``?size=`` gives ``ceil(size / part_size)`` part URLs; missing size is
        400, unknown backup 404, local disk 400.
        """
        path = "/api/remote/backups/" + self.backup
        status, _, raw = self.panel.call(self, "GET", path + "?size=10")
        self.assertEqual(status, 200)
        result = json.loads(raw)
        self.assertEqual(result["part_size"], 4)
        self.assertEqual(len(result["parts"]), 3)
        self.assertIn("partNumber=3", result["parts"][2])
        self.assertTrue(result["parts"][0].startswith(BASE + "/s3/devpanel/{}/{}.tar.gz?".format(SERVER, self.backup)))
        self.assertEqual(self.panel.call(self, "GET", path)[0], 400)
        self.assertEqual(self.panel.call(self, "GET", "/api/remote/backups/" + OTHER + "?size=1")[0], 404)
        self.state.backup_disk = "wings"
        self.assertEqual(self.panel.call(self, "GET", path + "?size=10")[0], 400)

    def test_s3_round_trip(self) -> None:
        """
        Parts PUT to the S3 double answer an MD5 ETag; the report completes
        the object from the reported parts; a completed backup is 409 for
        new part URLs and 400 for a second report.
        """
        archive = b"0123456789"
        path = "/api/remote/backups/{}?size={}".format(self.backup, len(archive))
        status, _, raw = self.panel.call(self, "GET", path)
        self.assertEqual(status, 200)
        parts = []
        for n, url in enumerate(json.loads(raw)["parts"], start=1):
            chunk = archive[(n - 1) * 4 : n * 4]
            d = self.panel.stub.request("PUT", url, data=chunk, headers={"Content-Type": "application/x-gzip"})
            self.panel.stub.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 200)
            [etag] = response.headers.getRawHeaders("ETag")
            self.assertEqual(etag, '"{}"'.format(hashlib.md5(chunk).hexdigest()))
            parts.append({"etag": etag, "part_number": n})
        report = {"checksum": "abc", "checksum_type": "sha1", "size": 10, "successful": True, "parts": parts}
        self.assertEqual(self.panel.call(self, "POST", "/api/remote/backups/" + self.backup, report)[0], 204)
        key = self.state.backup_object_key(self.backup)
        self.assertEqual(self.state.s3.objects[key], archive)
        backup = self.state.backups[self.backup]
        self.assertEqual((backup.successful, backup.checksum, backup.size), (True, "sha1:abc", 10))
        self.assertEqual(self.panel.call(self, "GET", "/api/remote/backups/{}?size=1".format(self.backup))[0], 409)
        self.assertEqual(self.panel.call(self, "POST", "/api/remote/backups/" + self.backup, report)[0], 400)
        d = self.panel.stub.get(self.state.backup_download_url(self.backup))
        self.panel.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/x-gzip"])
        self.assertEqual(self.successResultOf(self.panel.stub.content(response)), archive)

    def test_report_validation(self) -> None:
        """
        A successful report needs checksum, type and size; parts need etag
        and part_number; failures may carry empty values.
        """
        path = "/api/remote/backups/" + self.backup
        bad = [
            {"successful": True, "parts": None},
            {"successful": True, "checksum": "a", "checksum_type": "sha1", "size": 1, "parts": [{"etag": "x"}]},
            {"checksum": "a"},
        ]
        for body in bad:
            self.assertEqual(self.panel.call(self, "POST", path, body)[0], 422, body)
        failure = {"checksum": "", "checksum_type": "", "size": 0, "successful": False, "parts": None}
        self.assertEqual(self.panel.call(self, "POST", path, failure)[0], 204)
        self.assertFalse(self.state.backups[self.backup].successful)

    def test_restore(self) -> None:
        """
        A restore report clears the server status and is recorded.
        """
        self.state.servers[SERVER].status = "restoring_backup"
        path = "/api/remote/backups/{}/restore".format(self.backup)
        self.assertEqual(self.panel.call(self, "POST", path, {})[0], 422)
        self.assertEqual(self.panel.call(self, "POST", path, {"successful": True})[0], 204)
        self.assertIsNone(self.state.servers[SERVER].status)
        self.assertEqual(self.state.restore_reports, [{"backup": self.backup, "successful": True}])


class FaultInjectionTests(SynchronousTestCase):
    """
    Scripted faults (panel.md §9.4).
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.panel = _Panel(self.state)
        self.path = "/api/remote/servers/" + SERVER

    def test_status_then_normal(self) -> None:
        """
        A queued 500 is answered once (Panel error JSON), then the normal
        behaviour resumes.
        """
        self.state.faults.add("GET", "/servers/{uuid}", Respond(500), Respond(502, b"bad gateway"))
        status, _, body = self.panel.call(self, "GET", self.path)
        self.assertEqual(status, 500)
        self.assertEqual(error_of(body)["status"], "500")
        self.assertEqual(self.panel.call(self, "GET", self.path)[:3:2], (502, b"bad gateway"))
        self.assertEqual(self.panel.call(self, "GET", self.path)[0], 200)
        self.assertEqual([r.fault for r in self.state.received], ["respond 500", "respond 502", None])
        self.assertEqual(self.state.faults.pending(), 0)

    def test_concrete_path_first(self) -> None:
        """
        A fault for the concrete path is used before one for the template;
        other servers only see the template's.
        """
        self.state.add_server(OTHER)
        self.state.faults.add("GET", "/servers/{uuid}", Respond(503))
        self.state.faults.add("*", self.path, Respond(418, {"x": 1}))
        self.assertEqual(self.panel.call(self, "GET", self.path)[0], 418)
        self.assertEqual(self.panel.call(self, "GET", "/api/remote/servers/" + OTHER)[0], 503)
        self.assertEqual(self.panel.call(self, "GET", self.path)[0], 200)

    def test_delay(self) -> None:
        """
        A delay holds the answer until the injected clock has advanced, then
        runs the normal behaviour.
        """
        self.state.faults.add("GET", "/servers/{uuid}", Delay(45))
        d = self.panel.start("GET", self.path)
        self.panel.stub.flush()
        self.assertNoResult(d)
        self.panel.clock.advance(44)
        self.panel.stub.flush()
        self.assertNoResult(d)
        self.panel.clock.advance(1)
        status, _, _ = self.panel.finish(self, d)
        self.assertEqual(status, 200)

    def test_delay_then_status(self) -> None:
        """
        A delay can end in a scripted status instead.
        """
        self.state.faults.add("POST", "/activity", Delay(1, Respond(503)))
        d = self.panel.start("POST", "/api/remote/activity", {"data": []})
        self.panel.clock.advance(1)
        self.assertEqual(self.panel.finish(self, d)[0], 503)

    def test_drop(self) -> None:
        """
        A dropped connection fails the client's request without a response
        and is recorded with no status.
        """
        self.state.faults.add("GET", "/servers", Drop())
        d = self.panel.start("GET", "/api/remote/servers")
        self.panel.stub.flush()
        self.failureResultOf(d)
        self.assertIsNone(self.state.received[-1].status)
        self.assertEqual(self.state.received[-1].fault, "drop")
        self.assertEqual(self.panel.call(self, "GET", "/api/remote/servers")[0], 200)

    def test_delay_cancelled_on_disconnect(self) -> None:
        """
        A client that goes away during a delay cancels the timer.
        """
        clock = Clock()
        self.state.faults.add("GET", "/servers", Delay(30))
        request = DummyRequest([b"servers"])
        request.prepath = [b"api", b"remote"]
        request.requestHeaders.addRawHeader(b"authorization", AUTH.encode())
        resource = build_resource(self.state, clock)
        remote = resource.getChildWithDefault(b"api", request).getChildWithDefault(b"remote", request)
        self.assertIs(remote.render(request), NOT_DONE_YET)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        request.processingFailed(Failure(ConnectionError("gone")))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(request.written, [])


class ListenTests(SynchronousTestCase):
    """
    ``listen`` on a reactor's TCP endpoint.
    """

    def test_listen_sets_url(self) -> None:
        """
        ``listen`` binds a ``Site`` through the endpoint and records the bound
        address as the Panel URL.
        """
        reactor = MemoryReactor()
        state = make_state()
        running = self.successResultOf(listen(state, reactor, "tcp:0:interface=127.0.0.1"))
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertEqual(state.node.url, running.url)
        self.assertTrue(running.url.startswith("http://"))


def _decode(token: str, key: str = TOKEN) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """
    Verify ``token`` like the daemon does (no aud/iat/nbf/exp checks) and
    return (header, claims, header keys in order).
    """
    claims = jwt.decode(
        token,
        key,
        algorithms=["HS256"],
        options={"verify_aud": False, "verify_iat": False, "verify_nbf": False, "verify_exp": False},
    )
    raw_header = token.split(".")[0]
    header_keys = list(json.loads(base64.urlsafe_b64decode(raw_header + "=" * (-len(raw_header) % 4))))
    return jwt.get_unverified_header(token), claims, header_keys


USER_CLAIMS = {"iss", "aud", "jti", "iat", "nbf", "exp", "user_uuid", "user_id", "unique_id"}


class TokenTests(SynchronousTestCase):
    """
    JWT minting as the Panel does it (downloads-uploads.md §2.1,
    websocket.md §4.2, transfers.md §2.2).
    """

    def setUp(self) -> None:
        self.state = make_state()

    def check_common(self, token: str, lifetime: int, user_id: int = 1) -> dict[str, Any]:
        """
        Assert the header and registered claims every user token shares;
        return the claims.
        """
        header, claims, keys = _decode(token)
        self.assertEqual(keys, ["typ", "alg", "jti"])
        self.assertEqual(header, {"typ": "JWT", "alg": "HS256", "jti": claims["jti"]})
        self.assertEqual(claims["jti"], hashlib.md5((str(user_id) + SERVER).encode()).hexdigest())
        self.assertEqual(claims["aud"], ["http://node.test:8080"])
        self.assertEqual(claims["iss"], BASE)
        self.assertEqual(claims["iat"], NOW)
        self.assertEqual(claims["nbf"], NOW - 300)
        self.assertEqual(claims["exp"], NOW + lifetime)
        self.assertEqual(len(claims["unique_id"]), 16)
        self.assertTrue(claims["unique_id"].isalnum())
        return claims

    def test_download_file(self) -> None:
        """
        File download: ``file_path`` and ``server_uuid`` plus user claims,
        15 minutes, slashes not escaped.
        """
        token = mint_download_file(self.state, SERVER, "/logs/latest.log", now=NOW)
        claims = self.check_common(token, 900)
        self.assertEqual(set(claims), USER_CLAIMS | {"file_path", "server_uuid"})
        self.assertEqual((claims["file_path"], claims["server_uuid"]), ("/logs/latest.log", SERVER))
        self.assertEqual((claims["user_uuid"], claims["user_id"]), (OWNER, 1))
        payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
        self.assertIn(b'"file_path":"/logs/latest.log"', payload)

    def test_download_backup_and_upload(self) -> None:
        """
        Backup download carries ``backup_uuid``; upload only ``server_uuid``.
        """
        claims = self.check_common(mint_download_backup(self.state, SERVER, "b-1", now=NOW), 900)
        self.assertEqual(set(claims), USER_CLAIMS | {"backup_uuid", "server_uuid"})
        self.assertEqual(claims["backup_uuid"], "b-1")
        claims = self.check_common(mint_upload(self.state, SERVER, now=NOW, user="helper"), 900, user_id=2)
        self.assertEqual(set(claims), USER_CLAIMS | {"server_uuid"})
        self.assertEqual(claims["user_uuid"], HELPER)

    def test_websocket(self) -> None:
        """
        Websocket: 10 minutes, ``server_uuid`` and the user's permissions
        (or the given ones).
        """
        claims = self.check_common(mint_websocket(self.state, SERVER, now=NOW), 600)
        self.assertEqual(set(claims), USER_CLAIMS | {"server_uuid", "permissions"})
        self.assertEqual(claims["permissions"], ["*"])
        claims = self.check_common(mint_websocket(self.state, SERVER, now=NOW, user=HELPER), 600, user_id=2)
        self.assertEqual(claims["permissions"], ["websocket.connect", "control.console", "file.read"])
        claims = self.check_common(mint_websocket(self.state, SERVER, now=NOW, permissions=["x"]), 600)
        self.assertEqual(claims["permissions"], ["x"])
        self.state.users["admin"].root_admin = True
        claims = self.check_common(mint_websocket(self.state, SERVER, now=NOW), 600)
        self.assertIn("admin.websocket.errors", claims["permissions"])

    def test_transfer(self) -> None:
        """
        Transfer: ``sub`` in claims and header, sha256 ``jti``, no user claims.
        """
        token = mint_transfer(self.state, SERVER, now=NOW)
        header, claims, keys = _decode(token)
        self.assertEqual(keys, ["typ", "alg", "jti", "sub"])
        jti = hashlib.sha256(SERVER.encode()).hexdigest()
        self.assertEqual(header, {"typ": "JWT", "alg": "HS256", "jti": jti, "sub": SERVER})
        self.assertEqual(set(claims), {"iss", "aud", "jti", "iat", "nbf", "exp", "sub", "unique_id"})
        self.assertEqual((claims["jti"], claims["sub"], claims["exp"]), (jti, SERVER, NOW + 900))

    def test_knobs(self) -> None:
        """
        expired, issued_before, missing exp/iat, float timestamps, scope and
        a wrong key do what they say.
        """
        _, claims, _ = _decode(mint_upload(self.state, SERVER, now=NOW, expired=True))
        self.assertLess(claims["exp"], NOW)
        self.assertEqual(claims["nbf"], claims["iat"] - 300)
        _, claims, _ = _decode(mint_upload(self.state, SERVER, now=NOW, issued_before=NOW - 10))
        self.assertEqual((claims["iat"], claims["exp"]), (NOW - 11, NOW + 900))
        _, claims, _ = _decode(mint_upload(self.state, SERVER, now=NOW, missing_exp=True, missing_iat=True))
        self.assertNotIn("exp", claims)
        self.assertNotIn("iat", claims)
        _, claims, _ = _decode(mint_websocket(self.state, SERVER, now=NOW, float_timestamps=True))
        self.assertEqual((claims["iat"], claims["exp"]), (NOW + 0.25, NOW + 600.25))
        _, claims, _ = _decode(mint_websocket(self.state, SERVER, now=NOW, scope=True))
        self.assertEqual(claims["scope"], "websocket")
        _, claims, _ = _decode(mint_download_file(self.state, SERVER, "/a", now=NOW, scope="file-download x"))
        self.assertEqual(claims["scope"], "file-download x")
        _, claims, _ = _decode(mint_upload(self.state, SERVER, now=NOW))
        self.assertNotIn("scope", claims)
        self.assertRaises(jwt.InvalidSignatureError, _decode, mint_upload(self.state, SERVER, now=NOW, wrong_key=True))
        _, claims, _ = _decode(mint_upload(self.state, SERVER, now=NOW, extra_claims={"user_id": None, "x": 1}))
        self.assertNotIn("user_id", claims)
        self.assertEqual(claims["x"], 1)
        user = TokenUser("u-1", 42)
        _, claims, _ = _decode(mint_upload(self.state.node, SERVER, now=NOW, user=user))
        self.assertEqual(claims["jti"], hashlib.md5(("42" + SERVER).encode()).hexdigest())

    def test_unique_ids_differ(self) -> None:
        """
        Every token gets a fresh ``unique_id``.
        """
        ids = {_decode(mint_upload(self.state, SERVER, now=NOW))[1]["unique_id"] for _ in range(5)}
        self.assertEqual(len(ids), 5)

    def test_signed_urls(self) -> None:
        """
        Signed URLs point at the daemon; uploads append ``&directory=``.
        """
        url = signed_url("download-file", self.state, SERVER, path="/a b")
        self.assertTrue(url.startswith("http://node.test:8080/download/file?token="))
        self.assertEqual(_decode(url.split("token=")[1])[1]["file_path"], "/a b")
        url = signed_url("download-backup", self.state, SERVER, backup_uuid="b")
        self.assertTrue(url.startswith("http://node.test:8080/download/backup?token="))
        url = signed_url("upload", self.state, SERVER, directory="/plugins/new dir")
        self.assertTrue(url.startswith("http://node.test:8080/upload/file?token="))
        self.assertTrue(url.endswith("&directory=%2Fplugins%2Fnew%20dir"))
        self.assertRaises(ValueError, signed_url, "websocket", self.state, SERVER)
        self.assertRaises(ValueError, signed_url, "upload", self.state, SERVER, user="nobody")
        self.assertEqual(websocket_url(self.state, SERVER), "ws://node.test:8080/api/servers/{}/ws".format(SERVER))
