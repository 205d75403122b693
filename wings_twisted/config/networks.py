"""
The entries of ``api.remote_download.allowed_networks`` [project]: networks
that remote pulls may reach although the SSRF guard (api.md §6.2) refuses
them, such as a mirror on the node's LAN.  Default: none.

An entry is one string:

* ``192.168.10.0/24`` or ``fd12:3456::/48``: a network in CIDR notation, any
  port (host bits may be set: ``10.1.2.3/8`` means ``10.0.0.0/8``);
* ``192.168.10.5``, ``2001:db8::7``: one address;
* ``192.168.10.5:8080``, ``192.168.10.0/24:8080``,
  ``[2001:db8::7]:8080``, ``[fd12:3456::/48]:8080``: the same, reachable on
  that port only (an IPv6 network with a port is written in brackets).

Pure module: no Twisted.  ``load`` checks every entry when the file is
read, so a typo stops start-up with a line naming the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowedNetwork:
    """
    One parsed entry: a network and, optionally, the one port allowed in it.
    """

    network: Network
    port: int | None = None

    def permits(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        """
        Whether ``address:port`` is inside this entry.
        """
        if address.version != self.network.version:
            return False
        return address in self.network and (self.port is None or self.port == port)


def parse_allowed_network(text: str) -> AllowedNetwork:
    """
    Parse one entry (see the module docstring).

    :raises ValueError: with a message saying what is wrong.
    """
    value = text.strip()
    port: int | None = None
    if value.startswith("["):
        inner, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError("{!r}: missing ']'".format(text))
        if rest:
            if not rest.startswith(":"):
                raise ValueError("{!r}: expected ':<port>' after ']'".format(text))
            port = _port(rest[1:], text)
        value = inner
    elif value.count(":") == 1:
        value, _, port_text = value.partition(":")
        port = _port(port_text, text)
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("{!r} is not a network (expected e.g. 192.168.1.0/24, "
                         "10.0.0.5:8080 or [fd00::/8]:8080)".format(text)) from None
    return AllowedNetwork(network, port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("{!r}: the port must be a number from 1 to 65535".format(entry))
    return int(text)
