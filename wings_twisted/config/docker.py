"""
The ``docker`` section of the configuration (config.md §5), as frozen
dataclasses; :class:`~.schema.Config` holds it as ``Config.docker``.

``docker.network.IPv6`` is the attribute ``DockerNetworkConfig.ipv6``.  The
free-form maps ``log_config.config``, ``registries`` and
``overhead.multipliers`` are merged into their default maps on loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fields import _sub


@dataclass(frozen=True)
class NetworkInterface:
    """
    ``docker.network.interfaces.v4`` / ``.v6``.
    """

    subnet: str = ""
    gateway: str = ""


@dataclass(frozen=True)
class NetworkInterfacesConfig:
    """
    ``docker.network.interfaces``.
    """

    v4: NetworkInterface = _sub(lambda: NetworkInterface("172.18.0.0/16", "172.18.0.1"))
    v6: NetworkInterface = _sub(
        lambda: NetworkInterface("fdba:17c8:6c94::/64", "fdba:17c8:6c94::1011")
    )


@dataclass(frozen=True)
class DockerNetworkConfig:
    """
    ``docker.network``.
    """

    interface: str = "172.18.0.1"
    dns: tuple[str, ...] = ("1.1.1.1", "1.0.0.1")
    name: str = "pterodactyl_nw"
    ispn: bool = False
    driver: str = "bridge"
    network_mode: str = "pterodactyl_nw"
    is_internal: bool = False
    enable_icc: bool = True
    network_mtu: int = 1500
    interfaces: NetworkInterfacesConfig = _sub(NetworkInterfacesConfig)
    #: [pelican] ``IPv6`` in the file.
    ipv6: bool = field(default=True, metadata={"key": "IPv6"})


@dataclass(frozen=True)
class RegistryConfig:
    """
    One ``docker.registries`` entry.
    """

    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class InstallerLimitsConfig:
    """
    ``docker.installer_limits``.
    """

    #: MB
    memory: int = 1024
    #: percent
    cpu: int = 100


@dataclass(frozen=True)
class OverheadConfig:
    """
    ``docker.overhead``.
    """

    override: bool = False
    default_multiplier: float = 1.05
    #: memory limit (MB) -> multiplier
    multipliers: dict[int, float] = field(default_factory=dict)


def _default_log_options() -> dict[str, str]:
    return {"max-size": "5m", "max-file": "1", "compress": "false", "mode": "non-blocking"}


@dataclass(frozen=True)
class LogConfig:
    """
    ``docker.log_config``; ``config`` is merged into the default options.
    """

    type: str = "local"
    config: dict[str, str] = field(default_factory=_default_log_options)


@dataclass(frozen=True)
class DockerConfig:
    """
    ``docker`` (config.md §5).
    """

    network: DockerNetworkConfig = _sub(DockerNetworkConfig)
    domainname: str = ""
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    #: MiB
    tmpfs_size: int = 100
    container_pid_limit: int = 512
    installer_limits: InstallerLimitsConfig = _sub(InstallerLimitsConfig)
    overhead: OverheadConfig = _sub(OverheadConfig)
    use_performant_inspect: bool = True
    userns_mode: str = ""
    log_config: LogConfig = _sub(LogConfig)
    #: [pelican]
    system_ips: tuple[str, ...] = ()
