"""
Which addresses a remote pull may connect to: the SSRF guard of api.md §6.2.

Refused, whatever the name that led there (``refusal``):

* IPv4: ``0.0.0.0/8`` (this network), ``10.0.0.0/8``, ``172.16.0.0/12`` and
  ``192.168.0.0/16`` (private), ``100.64.0.0/10`` (shared address space),
  ``127.0.0.0/8`` (loopback), ``169.254.0.0/16`` (link-local),
  ``224.0.0.0/4`` (multicast) and ``240.0.0.0/4`` (reserved, with the
  broadcast address ``255.255.255.255``);
* IPv6: ``::`` (unspecified), ``::1`` (loopback), ``::/96`` (the deprecated
  IPv4-compatible form), ``fe80::/10`` (link-local), ``fec0::/10``
  (deprecated site-local), ``fc00::/7`` (unique local), ``ff00::/8``
  (multicast), ``64:ff9b:1::/48`` (local-use NAT64);
* an IPv6 address that carries an IPv4 address (IPv4-mapped
  ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo
  ``2001::/32``) is refused when the IPv4 address inside it is.

Upstream refuses loopback, link-local unicast and multicast, interface-local
multicast and the private and unique-local ranges; the rest is this
project's (api.md §6.2 asks for ``0.0.0.0/8``, ``100.64.0.0/10``, ``::`` and
the IPv4-mapped forms; all multicast, the reserved range and the other
embedded-IPv4 forms are further decisions of ours).

An operator may open chosen networks (and ports) again with
``api.remote_download.allowed_networks`` (``config.networks``); an
IPv4-mapped address is matched against those entries as the IPv4 address it
carries.  ``AddressPolicy`` combines both.

Pure module: no Twisted, no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

from ..config.networks import AllowedNetwork, parse_allowed_network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), name) for cidr, name in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    ))
_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), name) for cidr, name in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "unique local"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "local-use NAT64"),
    ))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_address(text: str) -> Address:
    """
    An address as a resolver or a URL gives it (an IPv6 zone suffix such as
    ``%eth0`` is dropped).

    :raises ValueError: not an IP address.
    """
    return ipaddress.ip_address(text.partition("%")[0])


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """
    The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo).
    """
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def refusal(address: Address) -> str | None:
    """
    The name of the refused range ``address`` is in, or ``None`` when a pull
    may connect to it.
    """
    if isinstance(address, ipaddress.IPv4Address):
        for network4, name in _REFUSED_V4:
            if address in network4:
                return name
        return None
    for network6, name in _REFUSED_V6:
        if address in network6:
            return name
    for inner in embedded_ipv4(address):
        reason = refusal(inner)
        if reason is not None:
            return "{} (inside an IPv6 address)".format(reason)
    return None


class RefusedAddress(Exception):
    """
    A pull would connect to an address the guard refuses.
    """

    def __init__(self, address: str, port: int, reason: str) -> None:
        super().__init__("{} port {} is {}".format(address, port, reason))
        self.address = address
        self.port = port
        self.reason = reason


class AddressPolicy:
    """
    The guard with the operator's exceptions.

    :param allowed: entries of ``api.remote_download.allowed_networks``.
    """

    def __init__(self, allowed: Sequence[AllowedNetwork] = ()) -> None:
        self._allowed = tuple(allowed)

    @classmethod
    def from_config(cls, entries: Iterable[str]) -> AddressPolicy:
        """
        The policy of the configured entries (checked when the file was
        loaded, so they parse).
        """
        return cls([parse_allowed_network(entry) for entry in entries])

    def allowed(self, address: Address, port: int) -> bool:
        """
        Whether an entry of the operator's list opens ``address:port``.
        """
        candidates: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(entry.permits(candidate, port) for entry in self._allowed
                   for candidate in candidates)

    def check(self, text: str, port: int) -> None:
        """
        Let ``text:port`` through or refuse it.

        :raises RefusedAddress: a refused range that no entry opens, or not
            an IP address at all.
        """
        try:
            address = parse_address(text)
        except ValueError:
            raise RefusedAddress(text, port, "not an IP address") from None
        if self.allowed(address, port):
            return
        reason = refusal(address)
        if reason is not None:
            raise RefusedAddress(text, port, reason)
