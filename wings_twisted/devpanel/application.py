"""
The one call of the Panel's application API the daemon's tools make:
``GET /api/application/nodes/{id}/configuration`` (panel.md §7, config.md
§6.1), which ``wings configure`` fetches.

The answer is ``Node::getConfiguration()`` of the Panel: the node's UUID and
token pair, ``api`` (host ``0.0.0.0``, the daemon port, TLS when the daemon
URL is ``https`` and the node is not behind a proxy, with the Let's Encrypt
paths of the lower-cased FQDN, the upload size), ``system.data``,
``system.sftp.bind_port``, the mount sources in ``allowed_mounts`` and the
Panel URL in ``remote``.  The FQDN, scheme and port come from the fixture's
``node.daemon_url``; the rest from the ``application`` section of the
fixture file::

    application:
      node_id: 1
      node_uuid: 00000000-0000-4000-8000-000000000001
      behind_proxy: false
      daemon_base: /var/lib/pterodactyl/volumes
      sftp_port: 2022
      upload_size: 100
      mounts: []
      api_keys:
        - {key: ptla_..., read_nodes: true}

Authentication as the Panel answers it: no key or an unknown key → 401
``Unauthenticated.``; a key without the nodes read permission → 403
``This action is unauthorized.``; an unknown node → 404.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .replies import Reply, error_reply, json_reply, not_found

DEFAULT_NODE_UUID = "00000000-0000-4000-8000-000000000001"
#: The application API key of the default fixtures (development only).
DEFAULT_API_KEY = "ptla_devApplicationKey0000000000000000000000000000"


@dataclass
class ApplicationKey:
    """
    An application API key and whether it may read nodes (``r_nodes``).
    """

    key: str
    read_nodes: bool = True


@dataclass
class ApplicationSettings:
    """
    The node's columns ``Node::getConfiguration()`` reads, and the keys.
    """

    node_id: int = 1
    node_uuid: str = DEFAULT_NODE_UUID
    behind_proxy: bool = False
    daemon_base: str = "/var/lib/pterodactyl/volumes"
    sftp_port: int = 2022
    upload_size: int = 100
    mounts: list[str] = field(default_factory=list)
    api_keys: list[ApplicationKey] = field(
        default_factory=lambda: [ApplicationKey(DEFAULT_API_KEY)])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ApplicationSettings:
        """
        The ``application`` section of the fixture file (absent: defaults).

        :raises ValueError: a key has an unusable value.
        """
        data = dict(data or {})
        settings = cls()
        keys = data.pop("api_keys", None)
        if keys is not None:
            if not isinstance(keys, list):
                raise ValueError("application.api_keys: expected a list")
            settings.api_keys = [
                ApplicationKey(str(k["key"]), bool(k.get("read_nodes", True)))
                if isinstance(k, Mapping) else ApplicationKey(str(k)) for k in keys]
        for name, kind in (("node_id", int), ("node_uuid", str), ("behind_proxy", bool),
                           ("daemon_base", str), ("sftp_port", int), ("upload_size", int)):
            if name in data:
                setattr(settings, name, kind(data.pop(name)))
        if "mounts" in data:
            settings.mounts = [str(m) for m in data.pop("mounts") or []]
        if data:
            raise ValueError("application: unknown keys {}".format(", ".join(sorted(data))))
        return settings


def node_configuration(settings: ApplicationSettings, *, token_id: str, token: str,
                       daemon_url: str, panel_url: str) -> dict[str, Any]:
    """
    ``Node::getConfiguration()`` for this node.
    """
    parts = urlsplit(daemon_url)
    fqdn = (parts.hostname or "").lower()
    https = parts.scheme == "https"
    port = parts.port if parts.port is not None else (443 if https else 80)
    live = "/etc/letsencrypt/live/" + fqdn
    return {
        "debug": False,
        "uuid": settings.node_uuid,
        "token_id": token_id,
        "token": token,
        "api": {
            "host": "0.0.0.0",
            "port": port,
            "ssl": {"enabled": https and not settings.behind_proxy,
                    "cert": live + "/fullchain.pem", "key": live + "/privkey.pem"},
            "upload_limit": settings.upload_size,
        },
        "system": {"data": settings.daemon_base, "sftp": {"bind_port": settings.sftp_port}},
        "allowed_mounts": list(settings.mounts),
        "remote": panel_url,
    }


def _bearer(header: str | None) -> str | None:
    position = (header or "").rfind("Bearer ")
    if header is None or position < 0:
        return None
    return header[position + 7:].split(",", 1)[0].strip() or None


def configuration_reply(settings: ApplicationSettings, authorization: str | None,
                        node: str, configuration: dict[str, Any]) -> Reply:
    """
    The Panel's answer to the configuration request for node ``node``.
    """
    presented = _bearer(authorization)
    key = None
    if presented is not None:
        for candidate in settings.api_keys:
            if hmac.compare_digest(candidate.key.encode(), presented.encode()):
                key = candidate
    if key is None:
        return error_reply(401, "Unauthenticated.", code="AuthenticationException")
    if not key.read_nodes:
        return error_reply(403, "This action is unauthorized.")
    if not node.isdigit() or int(node) != settings.node_id:
        return not_found()
    return json_reply(200, configuration)
