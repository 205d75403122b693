"""
The documents the engine is sent, exactly as upstream Wings builds them:
the server container (lifecycle.md §20.1), the installer container (§16.3),
in-situ limit updates (§1.7 step 4), image references and registry
credentials (§20.3).  Pure functions of the settings and the configuration,
so every rule is unit-tested without an engine.

Where the spec leaves room:

* ``/etc/timezone`` of the host is bind-mounted read-only when it exists (the
  ``TZ`` variable is always set as well);
* no ``Ulimits`` are sent: the engine's defaults apply (podman refuses soft
  limits above hard ones, and upstream sends none either);
* the installer container is not privileged (upstream's is): an install
  script needs the volume and the network, not the host's devices.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from ...config import Config
from .. import EnvironmentSettings, Limits
from ..cgroups import bounded_memory

SERVER_LABELS = {"Service": "Pterodactyl", "ContainerType": "server_process"}
INSTALLER_LABELS = {"Service": "Pterodactyl", "ContainerType": "server_installer"}
DROPPED_CAPABILITIES = ["setpcap", "mknod", "audit_write", "net_raw", "dac_override", "fowner",
                        "fsetid", "net_bind_service", "sys_chroot", "setfcap"]
VOLUME_TARGET = "/home/container"
TIMEZONE_FILE = "/etc/timezone"


@dataclass(frozen=True)
class NetworkView:
    """
    The node network as the containers see it, after boot adjusted it from
    the driver (§20.4): the IP replacing ``127.0.0.1`` and the ISPN switch.
    """

    interface: str
    ispn: bool
    mode: str


def network_view(config: Config) -> NetworkView:
    """
    The network settings as configured (before any boot adjustment).
    """
    network = config.docker.network
    return NetworkView(network.interface, network.ispn, network.network_mode)


def installer_name(uuid: str) -> str:
    """
    ``<uuid>_installer``.
    """
    return uuid + "_installer"


def local_image(image: str) -> bool:
    """
    A ``~``-prefixed image is local: never pulled.
    """
    return image.startswith("~")


def image_name(image: str) -> str:
    """
    The image reference the engine knows (the ``~`` dropped).
    """
    return image[1:] if image.startswith("~") else image


def split_image(image: str) -> tuple[str, str]:
    """
    ``(fromImage, tag)`` for ``POST /images/create``: the tag after the last
    ``:`` that is not part of a registry's ``host:port``, ``latest`` when
    there is none; a digest reference keeps its digest in ``fromImage``.
    """
    name = image_name(image)
    if "@" in name:
        return name, ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


def full_reference(image: str) -> str:
    """
    The image with its tag spelled out (``busybox`` → ``busybox:latest``).
    """
    name, tag = split_image(image)
    return "{}:{}".format(name, tag) if tag else name


def registry_auth(image: str, config: Config) -> str | None:
    """
    The ``X-Registry-Auth`` value for ``image``: the first
    ``docker.registries`` entry whose key is a prefix of the image name,
    base64url-encoded JSON; ``None`` when no entry applies.
    """
    name = image_name(image)
    for registry, credentials in config.docker.registries.items():
        if name.startswith(registry):
            document = {"username": credentials.username, "password": credentials.password,
                        "serveraddress": registry}
            return base64.urlsafe_b64encode(json.dumps(document).encode("utf-8")).decode("ascii")
    return None


def resources(limits: Limits, config: Config, *, pids: bool = True) -> dict[str, Any]:
    """
    The ``HostConfig`` resource fields of §20.1: memory with the overhead
    (decimal MB), reservation, swap, OOM killer, CPU quota/period/shares and
    pinning, IO weight, pids.
    """
    memory = bounded_memory(limits, config.docker.overhead)
    swap = -1 if limits.swap < 0 else limits.swap * 1_000_000 + memory
    document: dict[str, Any] = {
        "Memory": memory,
        "MemoryReservation": max(limits.memory_limit, 0) * 1_000_000,
        "MemorySwap": swap,
        "OomKillDisable": limits.oom_disabled,
        "BlkioWeight": limits.io_weight,
    }
    if limits.cpu_limit > 0:
        document.update(CpuQuota=limits.cpu_limit * 1000, CpuPeriod=100_000, CpuShares=1024)
    if limits.threads:
        document["CpusetCpus"] = limits.threads
    if pids:
        document["PidsLimit"] = config.docker.container_pid_limit
    return document


def libpod_resources(document: Mapping[str, Any]) -> dict[str, Any]:
    """
    The same limits in the shape of podman's
    ``POST /libpod/containers/{id}/update`` (an OCI ``LinuxResources``), used
    where the engine has no compatible ``update``.
    """
    out: dict[str, Any] = {"memory": {"limit": document["Memory"] or -1,
                                      "reservation": document["MemoryReservation"] or -1,
                                      "swap": document["MemorySwap"] or -1}}
    if "CpuQuota" in document:
        out["cpu"] = {"quota": document["CpuQuota"], "period": document["CpuPeriod"],
                      "shares": document["CpuShares"]}
    if "CpusetCpus" in document:
        out.setdefault("cpu", {})["cpus"] = document["CpusetCpus"]
    if "PidsLimit" in document:
        out["pids"] = {"limit": document["PidsLimit"]}
    return out


def environment(settings: EnvironmentSettings, network: NetworkView) -> list[str]:
    """
    ``KEY=value`` lines (§2.3), ``SERVER_IP=127.0.0.1`` rewritten to the
    node network's interface.
    """
    lines = []
    for key, value in settings.env:
        if key == "SERVER_IP" and value == "127.0.0.1" and network.interface:
            value = network.interface
        lines.append("{}={}".format(key, value))
    return lines


def ports(settings: EnvironmentSettings,
          network: NetworkView) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """
    ``(ExposedPorts, PortBindings)``: every mapped port on TCP and UDP;
    ports outside 1–65535 skipped; host IP ``127.0.0.1`` becomes the
    interface, or the binding is dropped in ISPN mode.
    """
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    mappings = settings.allocations.get("mappings")
    for ip, port_list in (mappings.items() if isinstance(mappings, Mapping) else ()):
        host_ip = str(ip)
        if host_ip == "127.0.0.1":
            if network.ispn:
                host_ip = ""
            else:
                host_ip = network.interface or host_ip
        for port in port_list if isinstance(port_list, list) else ():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                continue
            for protocol in ("tcp", "udp"):
                key = "{}/{}".format(port, protocol)
                exposed[key] = {}
                if host_ip:
                    bindings.setdefault(key, []).append({"HostIp": host_ip,
                                                         "HostPort": str(port)})
    return exposed, bindings


def custom_mounts(settings: EnvironmentSettings, allowed: tuple[str, ...]) -> tuple[
        list[dict[str, Any]], list[str]]:
    """
    ``(mounts, skipped sources)``: the server's mounts whose cleaned source
    starts with a cleaned ``allowed_mounts`` entry (a string prefix test, as
    upstream).
    """
    mounts: list[dict[str, Any]] = []
    skipped: list[str] = []
    prefixes = [posixpath.normpath(a) for a in allowed if a]
    for mount in settings.mounts:
        source = str(mount.get("source") or "")
        target = str(mount.get("target") or "")
        if not source or not target:
            continue
        clean = posixpath.normpath(source)
        if not any(clean.startswith(p) for p in prefixes):
            skipped.append(source)
            continue
        mounts.append({"Type": "bind", "Source": clean, "Target": posixpath.normpath(target),
                       "ReadOnly": bool(mount.get("read_only", False))})
    return mounts, skipped


def log_config(config: Config) -> dict[str, Any]:
    """
    ``docker.log_config`` as a ``LogConfig``.
    """
    return {"Type": config.docker.log_config.type,
            "Config": dict(config.docker.log_config.config)}


def container_user(settings: EnvironmentSettings, config: Config) -> str:
    """
    ``uid:gid`` of the system user, or the rootless container ids.
    """
    rootless = config.system.user.rootless
    if rootless.enabled:
        return "{}:{}".format(rootless.container_uid, rootless.container_gid)
    return "{}:{}".format(settings.uid, settings.gid)


def server_container(settings: EnvironmentSettings, config: Config, network: NetworkView, *,
                     timezone_file: bool | None = None) -> tuple[dict[str, Any], list[str]]:
    """
    ``(create body, skipped mount sources)`` of the server container (§20.1).
    """
    exposed, bindings = ports(settings, network)
    mounts = [{"Type": "bind", "Source": settings.volume, "Target": VOLUME_TARGET,
               "ReadOnly": False}]
    if timezone_file is None:
        timezone_file = os.path.isfile(TIMEZONE_FILE)
    if timezone_file:
        mounts.append({"Type": "bind", "Source": TIMEZONE_FILE, "Target": TIMEZONE_FILE,
                       "ReadOnly": True})
    extra, skipped = custom_mounts(settings, config.allowed_mounts)
    mounts.extend(extra)
    docker = config.docker
    host: dict[str, Any] = {
        "PortBindings": bindings,
        "Mounts": mounts,
        "Tmpfs": {"/tmp": "rw,exec,nosuid,size={}M".format(docker.tmpfs_size)},
        "Dns": list(docker.network.dns),
        "LogConfig": log_config(config),
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "CapDrop": list(DROPPED_CAPABILITIES),
        "NetworkMode": network.mode,
        "UsernsMode": docker.userns_mode,
    }
    host.update(resources(settings.limits, config))
    labels = dict(settings.labels)
    labels.update(SERVER_LABELS)
    body = {
        "Hostname": settings.uuid,
        "Domainname": docker.domainname,
        "User": container_user(settings, config),
        "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
        "OpenStdin": True, "Tty": True,
        "ExposedPorts": exposed,
        "Image": image_name(settings.image),
        "Env": environment(settings, network),
        "Labels": labels,
        "HostConfig": host,
    }
    return body, skipped


def installer_limits(limits: Limits, config: Config) -> Limits:
    """
    The installer's limits (§16.3): at least ``installer_limits.memory`` MB;
    CPU unlimited when either side is, else the larger.
    """
    floor = config.docker.installer_limits
    memory = max(limits.memory_limit, floor.memory)
    if floor.cpu == 0 or limits.cpu_limit == 0:
        cpu = 0
    else:
        cpu = max(limits.cpu_limit, floor.cpu)
    return Limits(memory_limit=memory, swap=limits.swap, io_weight=limits.io_weight,
                  cpu_limit=cpu, threads=limits.threads, oom_disabled=limits.oom_disabled)


def installer_container(settings: EnvironmentSettings, config: Config, network: NetworkView, *,
                        image: str, entrypoint: str, script_directory: str,
                        env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """
    The create body of ``<uuid>_installer`` (§16.3).
    """
    docker = config.docker
    host: dict[str, Any] = {
        "Mounts": [
            {"Type": "bind", "Source": settings.volume, "Target": "/mnt/server",
             "ReadOnly": False},
            {"Type": "bind", "Source": script_directory, "Target": "/mnt/install",
             "ReadOnly": False},
        ],
        "Tmpfs": {"/tmp": "rw,exec,nosuid,size={}M".format(docker.tmpfs_size)},
        "Dns": list(docker.network.dns),
        "LogConfig": log_config(config),
        "NetworkMode": network.mode,
        "UsernsMode": docker.userns_mode,
    }
    host.update(resources(installer_limits(settings.limits, config), config, pids=False))
    return {
        "Hostname": "installer",
        "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
        "OpenStdin": True, "Tty": True,
        "Cmd": [entrypoint, "/mnt/install/install.sh"],
        "Image": image_name(image),
        "Env": ["{}={}".format(k, v) for k, v in env],
        "Labels": dict(INSTALLER_LABELS),
        "HostConfig": host,
    }


def outgoing_network_name(ip: str) -> str:
    """
    The per-IP network of a server with ``force_outgoing_ip`` (§20.2):
    ``ip-<ip with . and : replaced by ->``.
    """
    return "ip-" + ip.replace(".", "-").replace(":", "-")


def outgoing_network(ip: str) -> dict[str, Any]:
    """
    The create body of that network: a bridge without IPv6 whose outgoing
    traffic is SNATed to ``ip``.
    """
    name = outgoing_network_name(ip)
    return {"Name": name, "Driver": "bridge", "EnableIPv6": False, "Internal": False,
            "Attachable": False, "Ingress": False,
            "Options": {"encryption": "false", "com.docker.network.bridge.default_bridge": "false",
                        "com.docker.network.host_ipv4": ip}}
