"""
The node network (lifecycle.md §20.4) and the per-IP networks of
``force_outgoing_ip`` (§20.2).

At boot, and again before a container is created as long as it has not
succeeded (an engine that was down at boot may come back), the daemon
inspects ``docker.network.name`` and creates it when missing: the configured
driver, IPv6 per ``docker.network.IPv6``, ``is_internal``, the v4/v6 subnets
and gateways of ``interfaces``, and the bridge options (not the default
bridge, ICC per ``enable_icc``, masquerading, host binding ``0.0.0.0``,
bridge name ``pterodactyl0``, MTU).  The driver then adjusts what containers
see (``spec.NetworkView``): ``host`` → interface ``127.0.0.1``, ISPN off;
``overlay``/``weavemesh`` → no interface, ISPN on; otherwise ISPN off, and
a bridge created here uses its v4 gateway as the interface.  The adjusted
view lives in memory (upstream also writes it back to ``config.yml``; this
daemon leaves the file alone).

Podman accepts the same document (it warns that the ICC option is not
recognised, and ignores it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...config import Config
from .client import DockerClient
from .errors import DockerError
from .spec import NetworkView, outgoing_network, outgoing_network_name


def network_document(config: Config) -> dict[str, Any]:
    """
    The ``POST /networks/create`` body of the node network.
    """
    network = config.docker.network
    ipam = [{"Subnet": network.interfaces.v4.subnet, "Gateway": network.interfaces.v4.gateway}]
    if network.ipv6:
        ipam.append({"Subnet": network.interfaces.v6.subnet,
                     "Gateway": network.interfaces.v6.gateway})
    return {
        "Name": network.name, "Driver": network.driver, "EnableIPv6": network.ipv6,
        "Internal": network.is_internal, "CheckDuplicate": True,
        "IPAM": {"Driver": "default", "Config": ipam},
        "Options": {
            "encryption": "false",
            "com.docker.network.bridge.default_bridge": "false",
            "com.docker.network.bridge.enable_icc": "true" if network.enable_icc else "false",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": "pterodactyl0",
            "com.docker.network.driver.mtu": str(network.network_mtu),
        },
    }


def adjusted_view(config: Config, driver: str, created: bool) -> NetworkView:
    """
    What containers see once the network's driver is known.
    """
    network = config.docker.network
    interface, ispn = network.interface, False
    if driver == "host":
        interface = "127.0.0.1"
    elif driver in ("overlay", "weavemesh"):
        interface, ispn = "", True
    elif created:
        interface = network.interfaces.v4.gateway
    return NetworkView(interface, ispn, network.network_mode)


async def ensure_node_network(client: DockerClient, config: Config) -> NetworkView:
    """
    Inspect or create the node network; the adjusted view.
    """
    name = config.docker.network.name
    try:
        found = await client.call("GET", "/networks/{}".format(quote(name, safe="")))
    except DockerError as e:
        if not e.missing:
            raise
    else:
        driver = found.get("Driver") if isinstance(found, dict) else ""
        return adjusted_view(config, str(driver or config.docker.network.driver), False)
    await client.call("POST", "/networks/create", body=network_document(config))
    return adjusted_view(config, config.docker.network.driver, True)


async def ensure_outgoing_network(client: DockerClient, ip: str) -> str:
    """
    The per-IP network of §20.2, created when missing; its name.
    """
    name = outgoing_network_name(ip)
    try:
        await client.call("GET", "/networks/{}".format(quote(name, safe="")))
    except DockerError as e:
        if not e.missing:
            raise
        await client.call("POST", "/networks/create", body=outgoing_network(ip))
    return name
