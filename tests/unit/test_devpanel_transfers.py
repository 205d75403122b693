"""
The development panel's nodes and transfers (``devpanel.transfers``, transfers.md §2): several
nodes with their own credentials and servers, the admin call that starts a transfer (the JWT
signed with the destination's token, the call to the source, the roll-back), and the reports that
move the server and delete it on the old node — the daemons played by an in-memory resource.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jwt
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from wings_twisted.devpanel.__main__ import build_parser
from wings_twisted.devpanel.resource import build_resource
from wings_twisted.devpanel.servers import StateError
from wings_twisted.devpanel.state import DevPanelState

SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
SECOND = "0b6c2d4e-1f3a-4b5c-8d7e-9f0a1b2c3d4e"
TOKEN_1 = "node-one-token"
TOKEN_2 = "node-two-token"
NOW = 1_800_000_000


class Daemons(Resource):
    """
    Both daemons as the panel reaches them: every request recorded, answered with the status
    scripted for its method.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, str, Any]] = []
        self.answers = {"POST": 202, "DELETE": 204}

    def render(self, request: Request) -> bytes:
        raw = request.content.read() if request.content is not None else b""
        auth = (request.getHeader(b"authorization") or b"").decode()
        self.requests.append((request.method.decode(), request.uri.decode(), auth,
                              json.loads(raw) if raw else None))
        request.setResponseCode(self.answers[request.method.decode()])
        return b""


def make_state() -> DevPanelState:
    return DevPanelState.from_dict({
        "node": {"token_id": "id1", "token": TOKEN_1, "name": "node1",
                 "daemon_url": "http://one.test:8080", "url": "http://panel.test"},
        "nodes": {"node2": {"token_id": "id2", "token": TOKEN_2,
                            "daemon_url": "http://two.test:8080"}},
        "servers": {SERVER: {}, SECOND: {"node": "node2"}},
    })


class Panel:
    """
    The panel in memory, its daemons behind ``StubTreq``.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.state = make_state()
        self.daemons = Daemons()
        self.daemons_http = StubTreq(self.daemons)
        self.http = StubTreq(build_resource(self.state, self.clock, self.daemons_http))

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             token_id: str = "id1") -> tuple[int, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer {}.{}".format(token_id, token)
        d = self.http.request(method, "http://panel.test" + path, headers=headers,
                              data=None if body is None else json.dumps(body).encode())
        self.flush()
        response = self.result(d)
        content = self.result(response.content())
        return response.code, json.loads(content) if content else None

    def flush(self) -> None:
        for _ in range(5):
            self.http.flush()
            self.daemons_http.flush()

    @staticmethod
    def result(d: Any) -> Any:
        found: list[Any] = []
        d.addBoth(found.append)
        assert found, "not fired"
        if hasattr(found[0], "raiseException"):
            found[0].raiseException()
        return found[0]


class NodeTests(SynchronousTestCase):
    """
    Several nodes in one panel.
    """

    def test_fixture(self) -> None:
        """
        ``nodes`` adds named nodes beside the first one (named by ``node.name``); a server
        names its node; bad entries are refused with the key.
        """
        state = make_state()
        self.assertEqual([n.name for n in state.all_nodes()], ["node1", "node2"])
        self.assertEqual(state.nodes["node2"].url, "http://panel.test")
        self.assertEqual(state.node_of(state.servers[SECOND]), "node2")
        self.assertEqual(state.node_of(state.servers[SERVER]), "node1")
        with self.assertRaises(StateError):
            DevPanelState.from_dict({"node": {"token_id": "a", "token": "b"},
                                     "nodes": {"x": {"token_id": "a.b", "token": "c",
                                                     "daemon_url": "http://x"}}})
        with self.assertRaises(StateError):
            DevPanelState.from_dict({"node": {"token_id": "a", "token": "b", "name": "x"},
                                     "nodes": {"x": {"token_id": "c", "token": "d",
                                                     "daemon_url": "http://x"}}})

    def test_each_node_sees_its_servers(self) -> None:
        """
        Both nodes authenticate with their own token pair and list only their own servers;
        any node may read any server's configuration (the destination fetches it, §4.2).
        """
        panel = Panel()
        status, page = panel.call("GET", "/api/remote/servers", TOKEN_1)
        self.assertEqual((status, [s["uuid"] for s in page["data"]]), (200, [SERVER]))
        status, page = panel.call("GET", "/api/remote/servers", TOKEN_2, token_id="id2")
        self.assertEqual((status, [s["uuid"] for s in page["data"]]), (200, [SECOND]))
        status, _ = panel.call("GET", "/api/remote/servers/" + SERVER, TOKEN_2, token_id="id2")
        self.assertEqual(status, 200)
        status, _ = panel.call("GET", "/api/remote/servers", TOKEN_2, token_id="id1")
        self.assertEqual(status, 403)


class TransferFlowTests(SynchronousTestCase):
    """
    transfers.md §2.1–§2.4 as the development panel plays them.
    """

    def start(self, panel: Panel, node: str = "node2", **body: Any) -> tuple[int, Any]:
        return panel.call("POST", "/admin/servers/{}/transfer".format(SERVER),
                          body=dict({"node": node}, **body))

    def test_start_calls_the_source(self) -> None:
        """
        The admin call creates a pending record and calls the **source** with its bearer, the
        destination URL and a JWT signed with the **destination's** token (``sub`` in claims
        and header, ``jti`` = sha256 of the uuid, array ``aud``, 15 minutes); 202.
        """
        panel = Panel()
        status, answer = self.start(panel)
        self.assertEqual(status, 202)
        self.assertEqual(answer["transfer"]["new_node"], "node2")
        method, uri, auth, body = panel.daemons.requests[0]
        self.assertEqual((method, uri, auth), ("POST", "/api/servers/{}/transfer".format(SERVER),
                                               "Bearer " + TOKEN_1))
        self.assertEqual(body["url"], "http://two.test:8080/api/transfers")
        self.assertEqual(body["server"], {"uuid": SERVER, "start_on_completion": False})
        token = body["token"]
        self.assertTrue(token.startswith("Bearer "))
        claims = jwt.decode(token[7:], TOKEN_2, algorithms=["HS256"],
                            options={"verify_aud": False, "verify_exp": False,
                                     "verify_iat": False, "verify_nbf": False})
        header = jwt.get_unverified_header(token[7:])
        jti = hashlib.sha256(SERVER.encode()).hexdigest()
        self.assertEqual((claims["sub"], header["sub"], claims["jti"], header["jti"]),
                         (SERVER, SERVER, jti, jti))
        self.assertEqual(claims["aud"], ["http://two.test:8080"])
        self.assertEqual(claims["iss"], "http://panel.test")
        self.assertEqual(claims["exp"] - claims["iat"], 900)
        self.assertTrue(panel.state.servers[SERVER].transfer)

    def test_refusals_and_rollback(self) -> None:
        """
        An unknown node or the server's own node is 422, a second transfer 409; a source that
        refuses rolls everything back (502, no record, not transferring).
        """
        panel = Panel()
        self.assertEqual(self.start(panel, "nowhere")[0], 422)
        self.assertEqual(self.start(panel, "node1")[0], 422)
        panel.daemons.answers["POST"] = 500
        status, _ = self.start(panel)
        self.assertEqual(status, 502)
        self.assertEqual(panel.state.transfers, {})
        self.assertFalse(panel.state.servers[SERVER].transfer)
        panel.daemons.answers["POST"] = 202
        self.assertEqual(self.start(panel)[0], 202)
        self.assertEqual(self.start(panel)[0], 409)

    def test_success_moves_and_deletes(self) -> None:
        """
        The destination's success report moves the server (and its allocation) to node2, then
        deletes it on node1 before answering 204; a second report is 409.
        """
        panel = Panel()
        self.start(panel, allocation="10.0.0.2:25570")
        status, _ = panel.call("POST", "/api/remote/servers/{}/transfer/success".format(SERVER),
                               TOKEN_2, token_id="id2")
        self.assertEqual(status, 204)
        self.assertEqual(panel.state.node_of(panel.state.servers[SERVER]), "node2")
        self.assertEqual(panel.state.servers[SERVER].settings["allocations"]["default"],
                         {"ip": "10.0.0.2", "port": 25570})
        self.assertEqual(panel.daemons.requests[-1][:3],
                         ("DELETE", "/api/servers/" + SERVER, "Bearer " + TOKEN_1))
        self.assertTrue(panel.state.transfers[SERVER].successful)
        status, _ = panel.call("POST", "/api/remote/servers/{}/transfer/failure".format(SERVER),
                               TOKEN_1)
        self.assertEqual(status, 409)
        status, page = panel.call("GET", "/api/remote/servers", TOKEN_2, token_id="id2")
        self.assertEqual(sorted(s["uuid"] for s in page["data"]), sorted([SERVER, SECOND]))
        status, answer = panel.call("GET", "/admin/transfers")
        self.assertEqual(answer["data"][0]["successful"], True)

    def test_failure_keeps_the_server(self) -> None:
        """
        A failure report marks the transfer failed; the server stays on node1; the next report
        is 409.
        """
        panel = Panel()
        self.start(panel)
        status, _ = panel.call("POST", "/api/remote/servers/{}/transfer/failure".format(SERVER),
                               TOKEN_1)
        self.assertEqual(status, 204)
        self.assertEqual(panel.state.node_of(panel.state.servers[SERVER]), "node1")
        self.assertIs(panel.state.transfers[SERVER].successful, False)
        status, _ = panel.call("POST", "/api/remote/servers/{}/transfer/success".format(SERVER),
                               TOKEN_2, token_id="id2")
        self.assertEqual(status, 409)
        self.assertEqual(panel.state.transfer_reports,
                         [{"server": SERVER, "successful": False}])

    def test_command_line(self) -> None:
        """
        ``python -m wings_twisted.devpanel transfer --server U --to N`` parses.
        """
        args = build_parser().parse_args(["transfer", "--server", SERVER, "--to", "node2",
                                          "--allocation", "1.2.3.4:5"])
        self.assertEqual((args.command, args.server, args.to, args.allocation),
                         ("transfer", SERVER, "node2", "1.2.3.4:5"))
