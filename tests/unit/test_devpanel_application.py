"""
Tests for the development Panel's application API
(``devpanel/application.py``): the node configuration ``wings configure``
fetches (panel.md §7), in memory.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.devpanel import DevPanelState, Respond, StateError
from wings_twisted.devpanel.application import DEFAULT_API_KEY, ApplicationKey

from .test_devpanel import BASE, CONFIG, TOKEN, TOKEN_ID, _Panel, error_of, make_state

PATH = "/api/application/nodes/1/configuration"


class NodeConfigurationTests(SynchronousTestCase):
    """
    ``GET /api/application/nodes/{id}/configuration``.
    """

    def setUp(self) -> None:
        self.state = make_state()
        self.panel = _Panel(self.state)

    def get(self, path: str = PATH, key: str | None = DEFAULT_API_KEY) -> tuple[int, bytes]:
        auth = None if key is None else "Bearer " + key
        code, _, body = self.panel.call(self, "GET", path, auth=auth)
        return code, body

    def test_generated_configuration(self) -> None:
        """
        ``Node::getConfiguration()``: the token pair, the daemon port, the
        Let's Encrypt paths of the lower-cased FQDN, the node settings and
        the Panel URL as ``remote``.
        """
        self.state.node.daemon_url = "https://Node.Example.com:8443"
        self.state.application.mounts = ["/srv/maps"]
        code, body = self.get()
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body), {
            "debug": False,
            "uuid": "00000000-0000-4000-8000-000000000001",
            "token_id": TOKEN_ID,
            "token": TOKEN,
            "api": {"host": "0.0.0.0", "port": 8443,
                    "ssl": {"enabled": True,
                            "cert": "/etc/letsencrypt/live/node.example.com/fullchain.pem",
                            "key": "/etc/letsencrypt/live/node.example.com/privkey.pem"},
                    "upload_limit": 100},
            "system": {"data": "/var/lib/pterodactyl/volumes", "sftp": {"bind_port": 2022}},
            "allowed_mounts": ["/srv/maps"],
            "remote": BASE,
        })
        self.state.application.behind_proxy = True
        self.assertFalse(json.loads(self.get()[1])["api"]["ssl"]["enabled"])

    def test_authentication(self) -> None:
        """
        No key or an unknown one: 401 ``Unauthenticated.``; a key without
        the nodes read permission: 403; an unknown node: 404.
        """
        self.state.application.api_keys.append(ApplicationKey("ptla_other", read_nodes=False))
        for key in (None, "ptla_unknown"):
            code, body = self.get(key=key)
            self.assertEqual((code, error_of(body)["detail"], error_of(body)["code"]),
                             (401, "Unauthenticated.", "AuthenticationException"))
        code, body = self.get(key="ptla_other")
        self.assertEqual((code, error_of(body)["detail"]), (403, "This action is unauthorized."))
        for path in ("/api/application/nodes/2/configuration",
                     "/api/application/nodes/x/configuration", "/api/application/users"):
            self.assertEqual(self.get(path)[0], 404)

    def test_recorded_and_faults(self) -> None:
        """
        Requests are recorded and scripted faults apply, as on the remote API.
        """
        self.state.faults.add("GET", PATH, Respond(500))
        self.assertEqual(self.get()[0], 500)
        self.assertEqual(self.get()[0], 200)
        self.assertEqual([r.path for r in self.state.received], [PATH, PATH])
        self.assertEqual(self.state.received[0].route, "/api/application/nodes/{id}/configuration")


class ApplicationFixtureTests(SynchronousTestCase):
    """
    The ``application`` section of the fixture file.
    """

    def test_shipped_fixture(self) -> None:
        """
        ``conf/devpanel.yml`` declares node 1 and the development key.
        """
        state = DevPanelState.from_yaml(CONFIG)
        self.assertEqual(state.application.node_id, 1)
        self.assertEqual([k.key for k in state.application.api_keys], [DEFAULT_API_KEY])

    def test_settings(self) -> None:
        """
        Every setting is read; an unknown key is refused by name.
        """
        state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN},
            "application": {"node_id": 4, "daemon_base": "/srv/volumes", "sftp_port": 2200,
                            "upload_size": 512, "api_keys": [{"key": "k", "read_nodes": False}]},
        })
        app = state.application
        self.assertEqual((app.node_id, app.daemon_base, app.sftp_port, app.upload_size),
                         (4, "/srv/volumes", 2200, 512))
        self.assertEqual(app.api_keys, [ApplicationKey("k", False)])
        with self.assertRaises(StateError) as caught:
            DevPanelState.from_dict({"node": {"token_id": TOKEN_ID, "token": TOKEN},
                                     "application": {"nodes": 1}})
        self.assertEqual(str(caught.exception), "application: unknown keys nodes")
