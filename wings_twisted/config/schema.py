"""
The configuration's schema: one frozen dataclass per section of
``config.yml`` and :class:`Config` for the whole file.

The file format is the Pterodactyl Wings one (``docs/spec/config.md``):
every key Wings reads, with the same meaning and default, plus the fork keys
(§9, §10) and this project's keys (§11).  The ``docker`` section lives in
:mod:`.docker`.  Attribute names are the YAML keys; the few keys that are not
snake_case in the file have snake_case attributes:

* ``Search`` / ``search`` -> ``Config.search``
* ``ChunkedUpload`` / ``chunked_upload`` -> ``Config.chunked_upload``
* ``PartialEdit`` / ``partial_edit`` -> ``Config.partial_edit``
* ``BlockBaseDirMount`` -> ``Config.block_base_dir_mount``
* ``docker.network.IPv6`` -> ``DockerNetworkConfig.ipv6``

**uid/gid.**  ``system.user.uid``/``gid`` are ``None`` when the file does not
set them.  The daemon fills them in at boot (lifecycle.md §1.2 step 5): from
``system.username`` when that user exists, otherwise from the uid/gid of the
running process; it then stores them with :func:`~.update.replace_values` and
rewrites the file.  ``None`` values are not written to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .docker import DockerConfig
from .fields import _PATH, _PORT, _sub


# --------------------------------------------------------------------------
# api


@dataclass(frozen=True)
class SslConfig:
    """
    ``api.ssl``: TLS for the HTTP API.
    """

    enabled: bool = False
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class DownloadsConfig:
    """
    ``api.downloads`` [project].
    """

    allow_range_resume: bool = True


@dataclass(frozen=True)
class RemoteDownloadConfig:
    """
    ``api.remote_download``: ``max_redirects`` [pelican] is accepted and
    unused (this daemon follows no redirect, api.md §6.2); ``allowed_networks``
    [project] lists the networks remote pulls may reach although the SSRF guard
    refuses them (``networks``), none by default.
    """

    max_redirects: int = 10
    allowed_networks: tuple[str, ...] = field(default=(), metadata={"networks": True})


@dataclass(frozen=True)
class ApiConfig:
    """
    ``api``: the HTTP API listener (config.md §3).
    """

    host: str = "0.0.0.0"
    port: int = field(default=8080, metadata=_PORT)
    ssl: SslConfig = _sub(SslConfig)
    disable_remote_download: bool = False
    #: MiB, per uploaded file.
    upload_limit: int = 100
    #: [project] file parts accepted in one POST /upload/file (the Panel sends one per request)
    upload_max_files: int = 1000
    #: [project] seconds for a request's line and headers to arrive (0 = no limit)
    header_timeout: int = 30
    #: [project] seconds without a byte while a request body is expected (0 = no limit)
    idle_timeout: int = 120
    #: [project] seconds a kept-alive connection may wait for its next request (0 = no limit)
    keepalive_timeout: int = 60
    #: [project] connections per client IP that have not authenticated (0 = no cap)
    max_unauthenticated_per_ip: int = 4096
    trusted_proxies: tuple[str, ...] = ()
    downloads: DownloadsConfig = _sub(DownloadsConfig)
    remote_download: RemoteDownloadConfig = _sub(RemoteDownloadConfig)

    @property
    def upload_limit_bytes(self) -> int:
        """
        ``upload_limit`` in bytes.
        """
        return self.upload_limit * 1024 * 1024


# --------------------------------------------------------------------------
# system


@dataclass(frozen=True)
class RootlessConfig:
    """
    ``system.user.rootless``.
    """

    enabled: bool = False
    container_uid: int = 0
    container_gid: int = 0


@dataclass(frozen=True)
class UserConfig:
    """
    ``system.user``.  ``uid``/``gid`` are ``None`` until the daemon resolves
    them (see the module docstring).
    """

    uid: int | None = None
    gid: int | None = None
    rootless: RootlessConfig = _sub(RootlessConfig)
    #: [pelican] ``passwd`` section, kept as written (``None`` when absent).
    passwd: Any = None


@dataclass(frozen=True)
class SftpConfig:
    """
    ``system.sftp``.
    """

    bind_address: str = "0.0.0.0"
    bind_port: int = field(default=2022, metadata=_PORT)
    read_only: bool = False
    key_only: bool = False


@dataclass(frozen=True)
class CrashDetectionConfig:
    """
    ``system.crash_detection``.
    """

    enabled: bool = True
    detect_clean_exit_as_crash: bool = True
    #: seconds
    timeout: int = 60


@dataclass(frozen=True)
class BackupsConfig:
    """
    ``system.backups``.
    """

    #: MiB/s, < 1 = unlimited
    write_limit: int = 0
    compression_level: str = "best_speed"
    max_concurrent: int = 0
    remove_backups_on_server_delete: bool = False
    restore_host_allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransfersConfig:
    """
    ``system.transfers``.
    """

    #: MiB/s, < 1 = unlimited
    download_limit: int = 0
    send_checksum_archive: bool = True
    include_backups: bool = False
    include_install_logs: bool = False
    #: [pelican] kept as written (``None`` when absent).
    storage_pool: Any = None


@dataclass(frozen=True)
class QuotasConfig:
    """
    ``system.quotas`` [pelican].
    """

    enabled: bool = False


@dataclass(frozen=True)
class SystemConfig:
    """
    ``system`` (config.md §4).  Directory paths are absolute after
    :func:`~.load.load_config`.
    """

    root_directory: str = field(default="/var/lib/pterodactyl", metadata=_PATH)
    log_directory: str = field(default="/var/log/pterodactyl", metadata=_PATH)
    data: str = field(default="/var/lib/pterodactyl/volumes", metadata=_PATH)
    archive_directory: str = field(default="/var/lib/pterodactyl/archives", metadata=_PATH)
    backup_directory: str = field(default="/var/lib/pterodactyl/backups", metadata=_PATH)
    tmp_directory: str = field(default="/tmp/pterodactyl", metadata=_PATH)
    username: str = "pterodactyl"
    #: empty = detect at boot
    timezone: str = ""
    user: UserConfig = _sub(UserConfig)
    disk_check_interval: int = 150
    activity_send_interval: int = 60
    activity_send_count: int = 100
    check_permissions_on_boot: bool = True
    enable_log_rotate: bool = True
    websocket_log_count: int = 150
    openat_mode: str = "auto"
    sftp: SftpConfig = _sub(SftpConfig)
    crash_detection: CrashDetectionConfig = _sub(CrashDetectionConfig)
    crash_detection_activity_lines: int = 2
    backups: BackupsConfig = _sub(BackupsConfig)
    transfers: TransfersConfig = _sub(TransfersConfig)
    quotas: QuotasConfig = _sub(QuotasConfig)
    #: [pelican] kept as written (``None`` when absent).
    machine_id: Any = None


# --------------------------------------------------------------------------
# other sections


@dataclass(frozen=True)
class ThrottlesConfig:
    """
    ``throttles`` (config.md §7).  The legacy keys ``maximum_trigger_count``,
    ``decay_interval`` and ``stop_grace_period`` are accepted and ignored (kept
    in ``Config.raw``).
    """

    enabled: bool = True
    lines: int = 2000
    #: milliseconds
    line_reset_interval: int = 100


@dataclass(frozen=True)
class RemoteQueryConfig:
    """
    ``remote_query``.
    """

    #: seconds
    timeout: int = 30
    boot_servers_per_page: int = 50
    #: [pelican] extra headers on every Panel call
    custom_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessEnvironmentConfig:
    """
    ``environment.process`` [project].
    """

    use_pty: bool = True
    shell: str = "/bin/bash"
    memory_watchdog: bool = True
    #: also permits the ``unshare`` helper, which is not a boundary
    allow_unsandboxed_install: bool = False
    #: network of the install jail: auto | slirp4netns | none | host
    install_network: Literal["auto", "slirp4netns", "none", "host"] = "auto"


@dataclass(frozen=True)
class EnvironmentConfig:
    """
    ``environment`` [project]: what runs the servers.
    """

    driver: Literal["docker", "process"] = "docker"
    process: ProcessEnvironmentConfig = _sub(ProcessEnvironmentConfig)


@dataclass(frozen=True)
class TokensConfig:
    """
    ``tokens`` [project].
    """

    require_scope: bool = False


@dataclass(frozen=True)
class WebsocketConfig:
    """
    ``websocket`` [project].
    """

    emit_suffixed_backup_events: bool = True
    emit_fork_backup_events: bool = False
    #: 0 = unlimited
    max_connections_per_server: int = 30
    #: seconds, 0 = never
    auth_timeout: int = 30
    rate_limits: bool = True
    close_on_suspend: bool = False


@dataclass(frozen=True)
class SearchConfig:
    """
    ``Search`` (also ``search``) [fork].
    """

    blacklisted_dirs: tuple[str, ...] = (
        "node_modules",
        ".git",
        ".wine",
        "appcache",
        "depotcache",
        "vendor",
    )
    max_recursion_depth: int = 8


@dataclass(frozen=True)
class ChunkedUploadConfig:
    """
    ``ChunkedUpload`` (also ``chunked_upload``) [fork].
    """

    #: MiB
    max_file_size: int = 10240
    max_concurrent_uploads: int = 5
    chunk_expiration_hours: int = 24


@dataclass(frozen=True)
class PartialEditConfig:
    """
    ``PartialEdit`` (also ``partial_edit``) [fork].
    """

    max_lines_per_request: int = 500
    #: bytes
    max_line_size: int = 10240
    enable_line_caching: bool = True


# --------------------------------------------------------------------------
# the whole file


@dataclass(frozen=True)
class Config:
    """
    The whole configuration file.

    ``raw`` is the mapping read from the file (unknown keys included, treat it
    as read-only); it does not take part in equality.  ``token`` is left out
    of ``repr``.  Lists are tuples; maps are plain dicts (read-only by
    convention).
    """

    debug: bool = False
    app_name: str = "Pterodactyl"
    uuid: str = ""
    token_id: str = ""
    token: str = field(default="", repr=False)
    api: ApiConfig = _sub(ApiConfig)
    system: SystemConfig = _sub(SystemConfig)
    docker: DockerConfig = _sub(DockerConfig)
    throttles: ThrottlesConfig = _sub(ThrottlesConfig)
    remote: str = ""
    remote_query: RemoteQueryConfig = _sub(RemoteQueryConfig)
    allowed_mounts: tuple[str, ...] = field(default=(), metadata={"panel_ignored": True})
    allowed_origins: tuple[str, ...] = ()
    allow_cors_private_network: bool = False
    ignore_panel_config_updates: bool = False
    environment: EnvironmentConfig = _sub(EnvironmentConfig)
    tokens: TokensConfig = _sub(TokensConfig)
    websocket: WebsocketConfig = _sub(WebsocketConfig)
    search: SearchConfig = _sub(SearchConfig, key="Search", aliases=("search",))
    chunked_upload: ChunkedUploadConfig = _sub(
        ChunkedUploadConfig, key="ChunkedUpload", aliases=("chunked_upload",)
    )
    partial_edit: PartialEditConfig = _sub(
        PartialEditConfig, key="PartialEdit", aliases=("partial_edit",)
    )
    #: [pelican] refuse mounts onto the volume base.
    block_base_dir_mount: bool = field(default=True, metadata={"key": "BlockBaseDirMount"})
    raw: dict[str, Any] = field(
        default_factory=dict, compare=False, repr=False, metadata={"internal": True}
    )
    #: name -> (value written in the file, value it resolved to); see
    #: :func:`~.update.dump_config`.
    _token_sources: dict[str, tuple[str, str]] = field(
        default_factory=dict, compare=False, repr=False, metadata={"internal": True}
    )

    @property
    def remote_base(self) -> str:
        """
        ``remote`` with one trailing ``/`` removed: the base of Panel calls.
        """
        return self.remote[:-1] if self.remote.endswith("/") else self.remote
