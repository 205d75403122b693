"""
Tests for the HTTP core (api.md §2): request ids, CORS and preflights,
bearer authentication, the error envelope, unknown routes, and the node
routes of §3 and §4.1–§4.2, against the real ``Site`` in memory.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted import __version__
from wings_twisted.config import load_config, write_config

from ..support import SERVER, TOKEN, Harness

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
OTHER = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"


class CrossCuttingTests(SynchronousTestCase):
    """
    Stages 1–4 of api.md §2.2.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER,
                         allowed_origins=["https://extra.example/", "https://other.example"])

    def test_request_id_on_every_response(self) -> None:
        """
        Successes, 401s, 404s and preflights all carry a fresh UUIDv4
        ``X-Request-Id``; a client-sent id is ignored.
        """
        ids = []
        for response in (self.h.get("/api/system"),
                         self.h.get("/api/system", {"Authorization": None}),
                         self.h.get("/nope", {"X-Request-Id": "mine"}),
                         self.h.get("/anything", method="OPTIONS")):
            rid = response.header("X-Request-Id")
            self.assertRegex(rid, UUID_RE)
            ids.append(rid)
        self.assertEqual(len(set(ids)), 4)

    def test_error_envelope_carries_request_id(self) -> None:
        """
        Error bodies are ``{"error", "request_id"}`` with the header's id and
        a JSON content type.
        """
        response = self.h.get("/api/servers/" + OTHER)
        self.assertEqual(response.status, 404)
        self.assertEqual(response.header("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual(response.json(), {
            "error": "The requested resource does not exist on this instance.",
            "request_id": response.header("X-Request-Id")})

    def test_preflight_needs_no_auth_on_any_path(self) -> None:
        """
        ``OPTIONS`` is 204 with the CORS set and no body, even on unknown
        paths and without a token.
        """
        for path in ("/upload/file", "/api/servers", "/no/such/route"):
            response = self.h.get(path, {"Authorization": None, "Origin": "http://panel.test"},
                                  method="OPTIONS")
            self.assertEqual(response.status, 204)
            self.assertEqual(response.body, b"")
            self.assertEqual(response.header("Access-Control-Allow-Origin"), "http://panel.test")
            self.assertEqual(response.header("Access-Control-Allow-Methods"),
                             "GET, POST, PATCH, PUT, DELETE, OPTIONS")
            self.assertEqual(response.header("Access-Control-Max-Age"), "7200")
            self.assertEqual(response.header("Access-Control-Allow-Credentials"), "true")

    def test_allowed_origins(self) -> None:
        """
        A listed origin is echoed (trailing slash of the entry ignored), an
        unlisted one gets the panel URL; ``Vary: Origin`` is set.
        """
        ok = self.h.get("/api/system", {"Origin": "https://extra.example"})
        self.assertEqual(ok.header("Access-Control-Allow-Origin"), "https://extra.example")
        self.assertEqual(ok.header("Vary"), "Origin")
        other = self.h.get("/api/system", {"Origin": "https://evil.example"})
        self.assertEqual(other.header("Access-Control-Allow-Origin"), "http://panel.test")

    def test_wildcard_origin_is_literal(self) -> None:
        """
        A ``*`` entry produces the literal ``*``.
        """
        h = Harness(FilePath(self.mktemp()), allowed_origins=["*"])
        response = h.get("/api/system", {"Origin": "https://anyone.example"})
        self.assertEqual(response.header("Access-Control-Allow-Origin"), "*")

    def test_cors_on_errors(self) -> None:
        """
        401 and 404 answers carry the CORS headers too.
        """
        preflight = self.h.get("/api/system", {"Authorization": None}, method="OPTIONS")
        for response in (self.h.get("/api/system", {"Authorization": None}),
                         self.h.get("/api/servers/" + OTHER),
                         self.h.get("/api/system", {"Authorization": None,
                                                    "Origin": "https://extra.example"})):
            self.assertIn(response.status, (401, 404))
            origin = response.header("Access-Control-Allow-Origin")
            self.assertIn(origin, ("http://panel.test", "https://extra.example"))
            self.assertEqual(response.header("Access-Control-Allow-Headers"),
                             preflight.header("Access-Control-Allow-Headers"))
            self.assertIn("Authorization", response.header("Access-Control-Allow-Headers"))
            self.assertEqual(response.header("Access-Control-Allow-Methods"),
                             "GET, POST, PATCH, PUT, DELETE, OPTIONS")
            self.assertEqual(response.header("Access-Control-Allow-Credentials"), "true")

    def test_private_network_header(self) -> None:
        """
        ``allow_cors_private_network`` adds the correct header and upstream's.
        """
        h = Harness(FilePath(self.mktemp()), allow_cors_private_network=True)
        response = h.get("/api/system")
        self.assertEqual(response.header("Access-Control-Allow-Private-Network"), "true")
        self.assertEqual(response.header("Access-Control-Request-Private-Network"), "true")

    def test_bearer_cases(self) -> None:
        """
        The case table of api.md §2.5.
        """
        cases = [
            (None, 401), ("", 401), ("Bearer", 401), ("bearer " + TOKEN, 401),
            ("Basic abc", 401), ("Bearer wrong", 403), ("Bearer  " + TOKEN, 403),
            ("Bearer " + TOKEN, 200),
        ]
        for header, status in cases:
            response = self.h.get("/api/system", {"Authorization": header})
            self.assertEqual(response.status, status, header)
            if status == 401:
                self.assertEqual(response.header("WWW-Authenticate"), "Bearer")
                self.assertEqual(response.json()["error"],
                                 "The required authorization heads were not present in the request.")
            if status == 403:
                self.assertEqual(response.json()["error"],
                                 "You are not authorized to access this endpoint.")

    def test_auth_before_server_lookup_and_routing(self) -> None:
        """
        A bad token is 401/403 even for unknown servers and unknown API
        paths; 404 only comes with a valid token.
        """
        self.assertEqual(self.h.get("/api/servers/" + OTHER, {"Authorization": None}).status, 401)
        self.assertEqual(self.h.get("/api/servers/" + OTHER, {"Authorization": "Bearer x"}).status, 403)
        self.assertEqual(self.h.get("/api/nothing", {"Authorization": None}).status, 401)
        self.assertEqual(self.h.get("/api/nothing").status, 404)

    def test_unknown_routes_are_json_404(self) -> None:
        """
        Unknown paths anywhere answer the JSON 404 envelope.
        """
        for path in ("/", "/nothing", "/download/nothing", "/upload/x", "/api"):
            response = self.h.get(path)
            self.assertEqual(response.status, 404, path)
            self.assertEqual(response.json()["error"],
                             "The requested resource does not exist on this instance.")

    def test_wrong_method_is_json_405(self) -> None:
        """
        A known path with a method it does not take is a JSON 405 with
        ``Allow``.
        """
        response = self.h.get("/api/system", method="DELETE")
        self.assertEqual(response.status, 405)
        self.assertIn("GET", response.header("Allow"))
        self.assertIn("error", response.json())

    def test_trailing_slash_ignored(self) -> None:
        """
        ``/api/servers/`` is ``/api/servers``, without a redirect.
        """
        response = self.h.get("/api/servers/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json(), [])

    def test_token_rotation_applies_to_next_request(self) -> None:
        """
        The bearer token is read from the live configuration per request.
        """
        from dataclasses import replace
        self.h.node.config = replace(self.h.node.config, token="rotated-token")
        self.assertEqual(self.h.get("/api/system").status, 403)
        self.assertEqual(self.h.get("/api/system", {"Authorization": "Bearer rotated-token"}).status, 200)


class SystemTests(SynchronousTestCase):
    """
    ``GET /api/system`` and ``POST /api/update``.
    """

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.h = Harness(self.base, environment={"driver": "process"})

    def test_v1(self) -> None:
        """
        Format 1 has exactly the keys the panel reads.
        """
        body = self.h.get("/api/system").json()
        self.assertEqual(set(body), {"architecture", "cpu_count", "kernel_version", "os", "version"})
        self.assertEqual(body["os"], "linux")
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["cpu_count"], os.cpu_count())
        self.assertEqual(body["kernel_version"], os.uname().release)

    def test_v2_process_driver(self) -> None:
        """
        Format 2 with the process environment is a well-formed document.
        """
        body = self.h.get("/api/system?v=2").json()
        self.assertEqual(set(body), {"version", "docker", "system"})
        self.assertEqual(body["system"]["os_type"], "linux")
        self.assertGreater(body["system"]["memory_bytes"], 0)
        self.assertEqual(body["docker"]["containers"]["total"], 0)

    def test_v2_docker_unreachable(self) -> None:
        """
        With the Docker driver and no engine, format 2 is a 500 envelope
        while format 1 still answers.
        """
        h = Harness(FilePath(self.mktemp()))
        self.assertEqual(h.get("/api/system?v=2").status, 500)
        self.assertEqual(h.get("/api/system").status, 200)

    def test_update_applies_and_rotates(self) -> None:
        """
        The panel's update is merged, written to the file (unknown keys
        kept), and the new token works at once.
        """
        path = self.base.child("config.yml").path
        write_config(self.h.node.config, path)
        with open(path, "a") as f:
            f.write("custom_operator_key: kept\n")
        self.h.node.config = load_config(path)
        self.h.node.config_path = path
        body = json.dumps({"token_id": "newTokenId000001", "token": "new-token",
                           "api": {"upload_limit": 5}, "allowed_mounts": ["/x"]}).encode()
        response = self.h.get("/api/update", method="POST", body=body)
        self.assertEqual((response.status, response.json()), (200, {"applied": True}))
        self.assertEqual(self.h.node.config.api.upload_limit, 5)
        self.assertEqual(self.h.node.config.allowed_mounts, ())
        self.assertEqual(self.h.get("/api/system").status, 403)
        self.assertEqual(self.h.get("/api/system", {"Authorization": "Bearer new-token"}).status, 200)
        reread = load_config(path)
        self.assertEqual(reread.token, "new-token")
        self.assertIn("custom_operator_key", open(path).read())

    def test_update_ignored(self) -> None:
        """
        ``ignore_panel_config_updates`` answers ``{"applied": false}``.
        """
        h = Harness(FilePath(self.mktemp()), ignore_panel_config_updates=True)
        response = h.get("/api/update", method="POST", body=b'{"token": "x"}')
        self.assertEqual(response.json(), {"applied": False})
        self.assertEqual(h.node.config.token, TOKEN)

    def test_update_bad_bodies(self) -> None:
        """
        Empty body, malformed JSON and wrong types are 400s.
        """
        empty = self.h.get("/api/update", method="POST", body=b"")
        self.assertEqual(empty.status, 400)
        self.assertEqual(empty.json()["error"],
                         "The data passed in the request was not in a parsable format. Please try again.")
        self.assertEqual(self.h.get("/api/update", method="POST", body=b"{nope").status, 400)
        self.assertEqual(self.h.get("/api/update", method="POST",
                                    body=b'{"api": {"port": "x"}}').status, 400)


class ServersTests(SynchronousTestCase):
    """
    ``/api/servers`` and ``/api/servers/{uuid}``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, OTHER)

    def test_create_fetches_config_and_makes_volume(self) -> None:
        """
        ``POST /api/servers`` asks the panel for the configuration, creates
        the volume and registers the server: 202, empty body.
        """
        response = self.h.get("/api/servers", method="POST",
                              body=json.dumps({"uuid": SERVER, "start_on_completion": False}).encode())
        self.assertEqual((response.status, response.body), (202, b""))
        self.assertIn(SERVER, self.h.node.registry)
        self.assertTrue(os.path.isdir(os.path.join(self.h.config.system.data, SERVER)))
        paths = [r.path for r in self.h.state.received]
        self.assertIn("/servers/" + SERVER, paths)

    def test_create_duplicate_is_409(self) -> None:
        """
        A second create for the same UUID is 409.
        """
        self.h.add_server(SERVER)
        response = self.h.get("/api/servers", method="POST", body=json.dumps({"uuid": SERVER}).encode())
        self.assertEqual(response.status, 409)

    def test_create_invalid_uuid_is_422(self) -> None:
        """
        Not a canonical v4 UUID → 422 with upstream's text.
        """
        for uuid in ("x", SERVER.upper(), 5, None):
            response = self.h.get("/api/servers", method="POST", body=json.dumps({"uuid": uuid}).encode())
            self.assertEqual(response.status, 422, uuid)
            self.assertEqual(response.json()["error"],
                             "The data provided in the request could not be validated.")

    def test_create_unknown_on_panel_is_500(self) -> None:
        """
        The panel's 404 becomes a 500 envelope and nothing is registered.
        """
        missing = "11111111-2222-4333-8444-555555555555"
        response = self.h.get("/api/servers", method="POST", body=json.dumps({"uuid": missing}).encode())
        self.assertEqual(response.status, 500)
        self.assertNotIn(missing, self.h.node.registry)

    def test_list_and_details(self) -> None:
        """
        Details carry state, suspension, every utilization field and the
        configuration; the list holds one entry per server.
        """
        server = self.h.add_server(SERVER)
        with open(os.path.join(server.volume.root, "a.txt"), "wb") as f:
            f.write(b"x" * 1000)
        details = self.h.get("/api/servers/" + SERVER).json()
        self.assertEqual(details["state"], "offline")
        self.assertFalse(details["is_suspended"])
        self.assertEqual(set(details["utilization"]), {
            "memory_bytes", "memory_limit_bytes", "cpu_absolute", "network", "uptime", "state",
            "disk_bytes"})
        # Charged in blocks with 4 KiB per inode (fs.quota): a 1000-byte file is 4 KiB.
        self.assertEqual(details["utilization"]["disk_bytes"], 4096)
        self.assertEqual(details["configuration"]["uuid"], SERVER)
        listing = self.h.get("/api/servers").json()
        self.assertEqual([d["configuration"]["uuid"] for d in listing], [SERVER])

    def test_lookup_is_case_sensitive(self) -> None:
        """
        An upper-cased UUID is a different (unknown) server.
        """
        self.h.add_server(SERVER)
        self.assertEqual(self.h.get("/api/servers/" + SERVER.upper()).status, 404)

    def test_delete(self) -> None:
        """
        DELETE unregisters and removes the volume: 204; then 404.
        """
        server = self.h.add_server(SERVER)
        root = server.volume.root
        response = self.h.get("/api/servers/" + SERVER, method="DELETE")
        self.assertEqual(response.status, 204)
        self.assertNotIn(SERVER, self.h.node.registry)
        self.assertFalse(os.path.exists(root))
        self.assertEqual(self.h.get("/api/servers/" + SERVER, method="DELETE").status, 404)


def _finished_request(method: bytes, uri: bytes) -> Any:
    """
    A request as the access log sees it once answered (200).
    """
    from twisted.web.test.requesthelper import DummyRequest
    request = DummyRequest(uri.split(b"?")[0].split(b"/")[1:])
    request.uri = uri
    request.method = method
    request.clientproto = b"HTTP/1.1"
    request.code = 200
    request.sentLength = 0
    return request


class AccessLogTests(SynchronousTestCase):
    """
    The access log never shows a signed-URL token.
    """

    def test_token_redacted(self) -> None:
        """
        ``token=`` values are replaced by ``***``, other parameters kept.
        """
        from wings_twisted.web.site import redacting_log_formatter
        request = _finished_request(b"POST", b"/upload/file?token=eyJhbGciOi.secret.sig&directory=/x")
        line = redacting_log_formatter("[27/Nov/2026:04:00:00 +0000]", request)
        self.assertIn("token=***&directory=/x", line)
        self.assertNotIn("secret", line)


class ClientAddressTests(SynchronousTestCase):
    """
    The client address used for token grants and activity (api.md §2.16).
    """

    def test_peer_unless_trusted_proxy(self) -> None:
        """
        ``X-Forwarded-For`` counts only when the peer is a trusted proxy;
        then its first entry wins, else ``X-Real-IP``.
        """
        from twisted.internet.address import IPv4Address
        from twisted.web.test.requesthelper import DummyRequest

        from wings_twisted.web.request import client_ip

        def request(peer: str, **headers: str) -> DummyRequest:
            r = DummyRequest([b""])
            r.client = IPv4Address("TCP", peer, 1234)
            for name, value in headers.items():
                r.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
            return r

        forwarded = {"X_Forwarded_For": "203.0.113.9, 10.0.0.1"}
        self.assertEqual(client_ip(request("198.51.100.1", **forwarded), []), "198.51.100.1")
        self.assertEqual(client_ip(request("10.0.0.5", **forwarded), ["10.0.0.0/8"]), "203.0.113.9")
        self.assertEqual(client_ip(request("10.0.0.5", X_Real_IP="203.0.113.7"), ["10.0.0.5"]),
                         "203.0.113.7")
        self.assertEqual(client_ip(request("198.51.100.1", **forwarded), ["10.0.0.0/8", "bogus"]),
                         "198.51.100.1")


class AccessLogSwitchTests(SynchronousTestCase):
    """
    Requests are logged only in debug mode, as upstream.
    """

    def test_only_in_debug(self) -> None:
        """
        ``Site.log`` writes a line with ``access_log`` on and nothing with it
        off (the default).
        """
        import io

        from wings_twisted.web.site import build_site
        h = Harness(FilePath(self.mktemp()))
        for enabled, expected in ((False, ""), (True, "GET /api/system")):
            site = build_site(h.node, access_log=enabled)
            site._logFile = buffer = io.StringIO()
            site.log(_finished_request(b"GET", b"/api/system"))
            self.assertIn(expected, buffer.getvalue())
            if not enabled:
                self.assertEqual(buffer.getvalue(), "")


class BodySinkTableTests(SynchronousTestCase):
    """
    The site's body-sink table is filled by whoever mounts a subtree.
    """

    def test_upload_sink_registered_by_mounting(self) -> None:
        """
        ``build_site`` puts the upload subtree's sink and the incoming
        transfer's under their absolute paths and nothing else; a bare
        ``ApiSite`` has none.
        """
        from wings_twisted.web.site import ApiSite, build_site
        from wings_twisted.web.uploads import UploadResource

        h = Harness(FilePath(self.mktemp()))
        site = build_site(h.node)
        self.assertEqual(sorted(site.body_sinks),
                         [(b"POST", b"/api/transfers"), (b"POST", b"/upload/file")])
        self.assertIsInstance(site.resource.children[b"upload"].children[b"file"], UploadResource)
        self.assertEqual(ApiSite(site.resource, h.node).body_sinks, {})

    def test_mount_prefixes_paths(self) -> None:
        """
        ``mount`` prefixes a subtree's relative sink paths with its name, so
        nested subtrees compose; the site makes them absolute.
        """
        from twisted.web.resource import Resource

        from wings_twisted.web.request import Subtree
        from wings_twisted.web.site import ApiSite, mount

        def factory(request: Any, uri: bytes, length: int | None) -> None:
            return None

        inner = Subtree(Resource(), {(b"POST", b"in"): factory, (b"PUT", b""): factory})
        middle_sinks: dict[Any, Any] = {}
        middle = Resource()
        mount(middle, b"mid", inner, middle_sinks)
        root_sinks: dict[Any, Any] = {}
        root = Resource()
        mount(root, b"top", Subtree(middle, middle_sinks), root_sinks)
        self.assertEqual(sorted(root_sinks), [(b"POST", b"top/mid/in"), (b"PUT", b"top/mid")])
        self.assertIs(root.children[b"top"].children[b"mid"], inner.resource)
        h = Harness(FilePath(self.mktemp()))
        self.assertEqual(sorted(ApiSite(root, h.node, body_sinks=root_sinks).body_sinks),
                         [(b"POST", b"/top/mid/in"), (b"PUT", b"/top/mid")])


class MethodTests(SynchronousTestCase):
    """
    Every route answers a method it does not take with the JSON 405.
    """

    def test_signed_url_routes(self) -> None:
        """
        ``HEAD /upload/file`` (Twisted would fake it with a GET that does not
        exist) and ``PUT`` or an unknown method on the download routes are
        JSON 405s listing what the route takes; nothing is logged as a failure.
        """
        h = Harness(FilePath(self.mktemp()), SERVER)
        for method, path, allowed in [("HEAD", "/upload/file", "POST"),
                                      ("PUT", "/download/file?token=x", "GET, HEAD"),
                                      ("BREW", "/download/backup", "GET, HEAD")]:
            response = h.get(path, {"Authorization": None}, method=method)
            self.assertEqual(response.status, 405, method + " " + path)
            self.assertEqual(response.header("Allow"), allowed)
            if method != "HEAD":
                self.assertIn("error", response.json())
        self.assertEqual(self.flushLoggedErrors(), [])
