"""
The nodes of the development Panel: each node's credentials as the Panel stores them, and the
checks of a further node declared in the ``nodes`` section of the fixture file (transfers between
nodes, ``transfers.py``).  No Twisted imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from .servers import StateError

__all__ = ["DEFAULT_DAEMON_URL", "DEFAULT_NODE_NAME", "DEFAULT_PANEL_URL", "NodeCredentials",
           "other_node"]

DEFAULT_DAEMON_URL = "http://127.0.0.1:8080"
DEFAULT_PANEL_URL = "http://127.0.0.1:8081"
DEFAULT_NODE_NAME = "node1"


@dataclass
class NodeCredentials:
    """
    The node as the Panel knows it: the daemon's token pair, the daemon's
    public URL (JWT ``aud`` and base of signed links) and the Panel's own URL
    (JWT ``iss``).
    """

    token_id: str
    token: str
    daemon_url: str = DEFAULT_DAEMON_URL
    url: str = DEFAULT_PANEL_URL
    #: How servers and the transfer commands name the node.
    name: str = DEFAULT_NODE_NAME

    @property
    def authorization(self) -> str:
        """
        The ``Authorization`` header value the daemon sends (panel.md §1.1).
        """
        return "Bearer {}.{}".format(self.token_id, self.token)


def other_node(first: NodeCredentials, name: str, token_id: str, token: str,
               daemon_url: str) -> NodeCredentials:
    """
    A further node of the Panel whose first node is ``first``: its daemon's token pair and
    address (the Panel's own address is the first node's).

    :raises StateError: an empty token or one with a ``.``, or the first node's name.
    """
    for key, value in (("token_id", token_id), ("token", token)):
        if not isinstance(value, str) or not value or "." in value:
            raise StateError("nodes.{}.{}: a non-empty string without '.' is required".format(
                name, key))
    if str(name) == first.name:
        raise StateError("nodes.{}: the first node already has that name".format(name))
    return NodeCredentials(token_id=token_id, token=token, daemon_url=str(daemon_url).rstrip("/"),
                           url=first.url, name=str(name))
