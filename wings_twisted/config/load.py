"""
The daemon configuration: ``config.yml`` turned into frozen dataclasses.

The file format is the Pterodactyl Wings one (``spec/config.md``): every key
Wings reads, with the same meaning and default, plus the fork keys (§9, §10)
and this project's keys (§11).  Attribute names are the YAML keys; the few
keys that are not snake_case in the file have snake_case attributes:

* ``Search`` / ``search`` -> ``Config.search``
* ``ChunkedUpload`` / ``chunked_upload`` -> ``Config.chunked_upload``
* ``PartialEdit`` / ``partial_edit`` -> ``Config.partial_edit``
* ``BlockBaseDirMount`` -> ``Config.block_base_dir_mount``
* ``docker.network.IPv6`` -> ``DockerNetworkConfig.ipv6``

Parsing rules (config.md §1):

* YAML 1.1 through ``yaml.safe_load`` plus the one YAML 1.1 boolean spelling
  PyYAML lacks and Go's ``yaml.v2`` has (``y``/``n``).  Unknown keys are never
  an error: they are kept in ``Config.raw`` and written back by
  :func:`dump_config`.
* A key that is present replaces its default, nested mappings are merged key
  by key, lists replace the default list.  Free-form maps
  (``docker.log_config.config``, ``docker.registries``,
  ``docker.overhead.multipliers``, ``remote_query.custom_headers``) are merged
  into their default map, as ``yaml.v2`` does.
* Scalars are type-checked.  Integers do not accept booleans (a whole float
  such as ``100.0`` is accepted, ``1.5`` is not); floats accept integers; a
  string field read from a file accepts any scalar and keeps its text exactly
  as written (``token_id: 0123`` is ``"0123"``, as with ``yaml.v2``).  From a
  dict or a JSON body a string field only accepts strings.
* ``null`` (or an empty value) for a scalar or a list/map gives its zero
  value (``""``, ``0``, ``false``, empty), as ``yaml.v2`` does.  ``null`` for a
  whole section (``docker:`` with every sub-key commented out) keeps the
  section's defaults: upstream would zero every value in it, which is never
  what the operator meant (deviation).
* Errors are :class:`ConfigError`, whose ``str()`` is one line naming the
  file, the dotted key and the problem, e.g.
  ``config.yml: api.port: expected an integer, got 'abc'``.  Besides type
  errors: missing or unreadable file, YAML syntax (with its line), a top level
  that is not a mapping, ``environment.driver`` not ``docker``/``process``, a
  port outside 0-65535 (0 asks the OS for a free port, which tests use), an
  empty ``system.*`` directory path, and an empty ``token`` (api.md §2.5: the
  daemon refuses to start without a node token).

Project decisions:

* **Relative directories.**  :func:`load_config` makes the ``system``
  directory paths (``root_directory``, ``log_directory``, ``data``,
  ``archive_directory``, ``backup_directory``, ``tmp_directory``) absolute by
  joining them to the working directory at load time, so a development config
  can say ``./var/lib`` and nothing later depends on the cwd.  The rewritten
  file therefore holds absolute paths.  :func:`config_from_dict` only does this
  when given ``cwd``.
* **uid/gid.**  ``system.user.uid``/``gid`` are ``None`` when the file does
  not set them.  The daemon fills them in at boot (lifecycle.md §1.2 step 5):
  from ``system.username`` when that user exists, otherwise from the uid/gid of
  the running process; it then stores them with :func:`replace_values` and
  rewrites the file.  ``None`` values are not written to the file.
* **Node credentials.**  ``WINGS_TOKEN_ID``/``WINGS_TOKEN`` (when non-empty)
  replace ``token_id``/``token``; the value is then expanded: ``$VAR`` and
  ``${VAR}`` from the environment first, then a ``file://<path>`` value is
  replaced by the file's content without trailing newlines (config.md §8).
  ``Config.token``/``token_id`` hold the resolved values; the file keeps what
  was written there (a ``file://`` reference is never replaced by the secret
  when the file is rewritten, unless the Panel rotates the token).
* **--debug** is not this module's concern: the caller keeps the flag apart so
  it is never written back.

:func:`apply_panel_update` implements ``POST /api/update`` (api.md §3.2,
config.md §6.2); the caller checks ``ignore_panel_config_updates`` first and
writes the result with :func:`write_config` (blocking: run it through
``run_blocking``).

This module does no I/O except in :func:`load_config`, :func:`write_config` and
the ``file://`` expansion, and imports nothing from Twisted.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tempfile
import types
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, Mapping, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "ApiConfig",
    "BackupsConfig",
    "ChunkedUploadConfig",
    "Config",
    "ConfigError",
    "CrashDetectionConfig",
    "DEFAULT_CONFIG_PATH",
    "DockerConfig",
    "DockerNetworkConfig",
    "DownloadsConfig",
    "EnvironmentConfig",
    "InstallerLimitsConfig",
    "LETS_ENCRYPT_PREFIX",
    "LogConfig",
    "NetworkInterface",
    "NetworkInterfacesConfig",
    "OverheadConfig",
    "PartialEditConfig",
    "ProcessEnvironmentConfig",
    "QuotasConfig",
    "RegistryConfig",
    "RemoteDownloadConfig",
    "RemoteQueryConfig",
    "RootlessConfig",
    "SearchConfig",
    "SftpConfig",
    "SslConfig",
    "SystemConfig",
    "ThrottlesConfig",
    "TokensConfig",
    "TransfersConfig",
    "UpdateError",
    "UserConfig",
    "WebsocketConfig",
    "apply_panel_update",
    "config_from_dict",
    "dump_config",
    "load_config",
    "replace_values",
    "write_config",
]

DEFAULT_CONFIG_PATH = "/etc/pterodactyl/config.yml"

#: An ``api.ssl.key`` pushed by the Panel that starts with this keeps the
#: current certificate paths (api.md §3.2 rule 4).
LETS_ENCRYPT_PREFIX = "/etc/letsencrypt/live/"

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Errors


class ConfigError(Exception):
    """
    The configuration is unusable.

    ``str()`` is a single line: ``<source>: <key>: <problem>``, where the
    source (usually the file path) and the dotted key are left out when not
    known.
    """

    def __init__(
        self, problem: str, *, key: str | None = None, source: str | None = None
    ) -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.key) if p]
        parts.append(self.problem)
        return " ".join(": ".join(parts).splitlines())

    def with_source(self, source: str | None) -> ConfigError:
        """
        Return a copy of this error (same class) attributed to ``source``.
        """
        return type(self)(self.problem, key=self.key, source=source)


class UpdateError(ConfigError):
    """
    A ``POST /api/update`` body was refused; the HTTP layer answers 400.
    """


# --------------------------------------------------------------------------
# Schema helpers

_PORT = {"port": True}
_PATH = {"path": True}


def _sub(factory: Any, **metadata: Any) -> Any:
    """
    A nested-section field whose default is built by ``factory``.
    """
    return field(default_factory=factory, metadata=metadata)


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
    ``api.remote_download`` [pelican].
    """

    max_redirects: int = 10


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
    :func:`load_config`.
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
# docker


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
    allow_unsandboxed_install: bool = False


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
    #: :func:`dump_config`.
    _token_sources: dict[str, tuple[str, str]] = field(
        default_factory=dict, compare=False, repr=False, metadata={"internal": True}
    )

    @property
    def remote_base(self) -> str:
        """
        ``remote`` with one trailing ``/`` removed: the base of Panel calls.
        """
        return self.remote[:-1] if self.remote.endswith("/") else self.remote


# --------------------------------------------------------------------------
# YAML flavour

_YN = re.compile(r"^(?:y|Y|n|N)$")


class _Loader(yaml.SafeLoader):
    """
    ``SafeLoader`` plus the ``y``/``n`` booleans of YAML 1.1 / ``yaml.v2``.
    """

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _YN, list("yYnN"))


class _TextLoader(yaml.BaseLoader):
    """
    Every scalar as the text written in the file (for string fields).
    """


class _Dumper(yaml.SafeDumper):
    """
    ``SafeDumper`` that quotes ``y``/``n`` so they read back as strings.
    """


_Dumper.add_implicit_resolver("tag:yaml.org,2002:bool", _YN, list("yYnN"))


# --------------------------------------------------------------------------
# Building dataclasses from plain data

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def _schema_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def _yaml_key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _field_keys(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """
    Every spelling of a field, in the order they are applied (the canonical
    one last, so it wins).
    """
    return tuple(f.metadata.get("aliases", ())) + (_yaml_key(f),)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
    """
    A short one-line rendering of a bad value for an error message.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    text = value if isinstance(value, str) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text)


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"expected {expected}, got {_describe(value)}", key=path)


def _text_child(text: Any, key: Any) -> Any:
    if isinstance(text, dict):
        return text.get(key if isinstance(key, str) else str(key))
    return None


def _text_item(text: Any, index: int) -> Any:
    if isinstance(text, list) and index < len(text):
        return text[index]
    return None


_ZERO: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _convert(hint: Any, value: Any, text: Any, path: str, current: Any) -> Any:
    """
    Check and convert one value against its type hint.

    :param text: the same value as written in the file (scalars as strings),
        or ``None`` when there is no file text.
    :param current: the value this one is laid over (the default, or what an
        earlier spelling of the key set): sections and maps merge into it.
    """
    if is_dataclass(hint):
        if value is None:
            return current
        if not isinstance(value, Mapping):
            raise _type_error(path, "a mapping", value)
        return _build(cast(type, hint), value, text, path, current)
    if hint is Any:
        return copy.deepcopy(value)
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        chosen = _convert(str, value, text, path, None)
        if chosen not in choices:
            raise ConfigError(
                f"expected one of {', '.join(choices)}, got {_describe(chosen)}", key=path
            )
        return chosen
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _convert(inner[0], value, text, path, None)
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, "a list", value)
        item_hint = get_args(hint)[0]
        return tuple(
            _convert(item_hint, item, _text_item(text, i), f"{path}[{i}]", None)
            for i, item in enumerate(value)
        )
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _type_error(path, "a mapping", value)
        key_hint, value_hint = get_args(hint)
        result = dict(current or {})
        for raw_key, item in value.items():
            key = _convert_key(key_hint, raw_key, path)
            base = result.get(key)
            if base is None and is_dataclass(value_hint):
                base = cast(type, value_hint)()
            result[key] = _convert(
                value_hint, item, _text_child(text, raw_key), _join(path, raw_key), base
            )
        return result
    return _convert_scalar(hint, value, text, path)


def _convert_key(hint: Any, key: Any, path: str) -> Any:
    if hint is int:
        if isinstance(key, int) and not isinstance(key, bool):
            return key
        if isinstance(key, str) and re.fullmatch(r"-?[0-9]+", key.strip()):
            return int(key)
        raise ConfigError(f"expected integer keys, got {_describe(key)}", key=path)
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float)):
        return _describe(key) if isinstance(key, bool) else str(key)
    raise ConfigError(f"expected string keys, got {_describe(key)}", key=path)


def _convert_scalar(hint: Any, value: Any, text: Any, path: str) -> Any:
    if value is None:
        return _ZERO[hint]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, "a boolean (true or false)", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(path, "an integer", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(path, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        # yaml.v2 stores the scalar's text in a string field, whatever it
        # looks like (token_id: 0123, uuid: 12345, app_name: yes).
        if isinstance(text, str) and not isinstance(value, (list, tuple, Mapping)):
            return text
        raise _type_error(path, "a string", value)
    raise TypeError(f"unsupported configuration type {hint!r} at {path}")


def _build(cls: type[_T], data: Mapping[Any, Any], text: Any, path: str, base: _T) -> _T:
    """
    Lay ``data`` over ``base`` (an instance of the dataclass ``cls``).
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in _schema_fields(cls):
        current = getattr(base, f.name)
        for key in _field_keys(f):
            if key in data:
                sub = _join(path, key)
                current = _convert(hints[f.name], data[key], _text_child(text, key), sub, current)
                _check_field(f, current, sub)
        values[f.name] = current
    return dataclasses.replace(base, **values)  # type: ignore[type-var]


def _check_field(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    if f.metadata.get("port") and not 0 <= value <= 65535:
        raise ConfigError(f"must be between 0 and 65535, got {value}", key=path)
    if f.metadata.get("path") and not value:
        raise ConfigError("must not be empty", key=path)


# --------------------------------------------------------------------------
# Secrets and paths

_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")
_FILE_PREFIX = "file://"


def _expand(value: str, environ: Mapping[str, str], key: str) -> str:
    """
    Expand ``$VAR``/``${VAR}`` then a ``file://`` reference (config.md §8).
    """
    def variable(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        return environ.get(name, "") if name else ""

    value = _ENV_REF.sub(variable, value)
    if value.startswith(_FILE_PREFIX):
        path = value[len(_FILE_PREFIX) :]
        try:
            with open(path, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ConfigError(f"cannot read {value}: {reason}", key=key) from None
        value = content.rstrip("\r\n")
    return value


def _resolve_credentials(
    config: Config, environ: Mapping[str, str]
) -> tuple[Config, dict[str, tuple[str, str]]]:
    sources: dict[str, tuple[str, str]] = {}
    resolved: dict[str, Any] = {}
    for name, variable in (("token_id", "WINGS_TOKEN_ID"), ("token", "WINGS_TOKEN")):
        written = getattr(config, name)
        chosen = environ.get(variable, "") or written
        resolved[name] = _expand(chosen, environ, name)
        sources[name] = (written, resolved[name])
    return dataclasses.replace(config, **resolved), sources


def _resolve_paths(config: Config, cwd: str) -> Config:
    changes: dict[str, Any] = {}
    for f in _schema_fields(SystemConfig):
        if f.metadata.get("path"):
            value = getattr(config.system, f.name)
            if not os.path.isabs(value):
                changes[f.name] = os.path.normpath(os.path.join(cwd, value))
    if not changes:
        return config
    return dataclasses.replace(config, system=dataclasses.replace(config.system, **changes))


def _check_token(config: Config) -> None:
    if not config.token:
        raise ConfigError(
            "must not be empty; the daemon refuses to start without a node token", key="token"
        )


def _make_config(
    data: Mapping[Any, Any],
    *,
    text: Any,
    environ: Mapping[str, str] | None,
    cwd: str | None,
    raw: Mapping[Any, Any],
    sources: dict[str, tuple[str, str]] | None = None,
) -> Config:
    config = _build(Config, data, text, "", Config())
    if environ is not None:
        config, sources = _resolve_credentials(config, environ)
    _check_token(config)
    if cwd is not None:
        config = _resolve_paths(config, cwd)
    return dataclasses.replace(
        config, raw=copy.deepcopy(dict(raw)), _token_sources=dict(sources or {})
    )


# --------------------------------------------------------------------------
# Public entry points


def config_from_dict(
    data: Mapping[Any, Any],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    source: str | None = None,
) -> Config:
    """
    Build a :class:`Config` from plain data, with the validation of
    :func:`load_config`.

    :param environ: environment for ``WINGS_TOKEN*`` and ``${VAR}``; the
        default is an empty one, so tests never see the real environment.
    :param cwd: when given, relative ``system`` directories are joined to it.
    :param source: prefix of error messages (a file name).
    :raises ConfigError: the data is not a valid configuration.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {_describe(data)}", source=source
        )
    try:
        return _make_config(
            data, text=None, environ=environ or {}, cwd=cwd, raw=data
        )
    except ConfigError as e:
        raise e.with_source(source) from None


def load_config(
    path: str, *, environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> Config:
    """
    Read and validate a ``config.yml`` (blocking).

    :param environ: environment for ``WINGS_TOKEN*`` and ``${VAR}``; default
        ``os.environ``.
    :param cwd: directory relative ``system`` paths are joined to; default the
        current working directory.
    :raises ConfigError: one line naming ``path`` and the problem.
    """
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise ConfigError(
            f"cannot read the configuration file: {e.strerror or e}", source=path
        ) from None
    try:
        document = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("the file is not valid UTF-8", source=path) from None
    try:
        data = yaml.load(document, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_problem(e), source=path) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {_describe(data)}", source=path
        )
    try:
        text = yaml.load(document, Loader=_TextLoader)  # noqa: S506 - no object construction
    except yaml.YAMLError:
        text = None
    try:
        return _make_config(
            data,
            text=text,
            environ=os.environ if environ is None else environ,
            cwd=os.getcwd() if cwd is None else cwd,
            raw=data,
        )
    except ConfigError as e:
        raise e.with_source(path) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    problem = " ".join(str(problem).split())
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"
    return f"invalid YAML: {problem}"


# --------------------------------------------------------------------------
# Writing


def _to_tree(value: Any) -> Any:
    """
    Plain YAML/JSON data for a config value (YAML key names, lists, dicts).
    """
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[Any, Any] = {}
        for f in _schema_fields(type(value)):
            item = getattr(value, f.name)
            if item is None:
                continue
            out[_yaml_key(f)] = _to_tree(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_tree(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_tree(v) for k, v in value.items()}
    return value


def _with_unknown(cls: type, known: dict[Any, Any], raw: Any) -> dict[Any, Any]:
    """
    Add the keys of ``raw`` that the schema of ``cls`` does not know.
    """
    if not isinstance(raw, Mapping):
        return known
    result = dict(known)
    hints = _hints(cls)
    claimed: set[Any] = set()
    for f in _schema_fields(cls):
        keys = _field_keys(f)
        claimed.update(keys)
        name = _yaml_key(f)
        hint = hints[f.name]
        if name not in result:
            continue
        for key in keys:
            sub = raw.get(key)
            if not isinstance(sub, Mapping):
                continue
            if is_dataclass(hint):
                result[name] = _with_unknown(cast(type, hint), result[name], sub)
            elif get_origin(hint) is dict and is_dataclass(get_args(hint)[1]):
                entries = dict(result[name])
                for entry, entry_raw in sub.items():
                    if entry in entries:
                        entries[entry] = _with_unknown(
                            get_args(hint)[1], entries[entry], entry_raw
                        )
                result[name] = entries
    for key, value in raw.items():
        if key not in claimed:
            result[key] = copy.deepcopy(value)
    return result


def dump_config(config: Config) -> str:
    """
    Render ``config`` as YAML: every known key (defaults included) followed,
    at each level, by the unknown keys of the file it was read from.

    ``token_id``/``token`` are written as they were in the file (an
    environment override or a ``file://`` reference stays out of the file)
    unless they changed since, e.g. rotated by the Panel.  ``None`` values
    (unset ``uid``/``gid``, absent raw sections) are left out.
    """
    tree = _to_tree(config)
    for name, (written, resolved) in config._token_sources.items():
        if getattr(config, name) == resolved:
            tree[name] = written
    tree = _with_unknown(Config, tree, config.raw)
    return yaml.dump(
        tree,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


def write_config(config: Config, path: str) -> None:
    """
    Write :func:`dump_config` output to ``path`` atomically with mode 0600
    (temporary file in the same directory, fsync, ``os.replace``).  Blocking.

    A symlinked ``path`` is followed: its target is replaced, the link stays.

    :raises OSError: the file could not be written; ``path`` is unchanged.
    """
    data = dump_config(config).encode("utf-8")
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        # Some filesystems refuse fsync on a directory; the rename is done.
        pass
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------
# POST /api/update


def _is_collection(hint: Any) -> bool:
    return get_origin(hint) in (tuple, dict)


def _filter_update(cls: type, body: Mapping[Any, Any]) -> dict[Any, Any]:
    """
    The part of a Panel update body that the schema of ``cls`` knows.

    Unknown keys and ``allowed_mounts`` are dropped.  ``null`` keeps the
    current value, except for lists and maps which it empties (Go's JSON
    decoding).
    """
    hints = _hints(cls)
    out: dict[Any, Any] = {}
    for f in _schema_fields(cls):
        if f.metadata.get("panel_ignored"):
            continue
        hint = hints[f.name]
        name = _yaml_key(f)
        for key in _field_keys(f):
            if key not in body:
                continue
            value = body[key]
            if value is None:
                if _is_collection(hint):
                    out[name] = None
                continue
            if is_dataclass(hint) and isinstance(value, Mapping):
                value = _merge_trees(out.get(name) or {}, _filter_update(cast(type, hint), value))
            out[name] = value
    return out


def _merge_trees(base: Mapping[Any, Any], over: Mapping[Any, Any]) -> dict[Any, Any]:
    """
    ``over`` laid on ``base``: mappings merge key by key, anything else
    (lists included) replaces.
    """
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merge_trees(result[key], value)
        else:
            result[key] = value
    return result


def apply_panel_update(config: Config, body: Any) -> Config:
    """
    Lay a ``POST /api/update`` JSON body over ``config`` (api.md §3.2).

    Keys present replace, nested objects merge, arrays replace, unknown keys
    and ``allowed_mounts`` are ignored, ``null`` keeps the current value.  If
    the new ``api.ssl.key`` starts with ``/etc/letsencrypt/live/`` the current
    ``api.ssl.cert``/``key`` are kept.  The result keeps ``config.raw``, so
    unknown keys of the file survive the rewrite.  Checking
    ``ignore_panel_config_updates`` and writing the file are the caller's job.

    :raises UpdateError: the body is not an object, a value has the wrong type,
        the token would be empty or uses ``$``/``file://`` indirection.
    """
    if not isinstance(body, Mapping):
        raise UpdateError(f"the request body must be a JSON object, got {_describe(body)}")
    update = _filter_update(Config, body)
    for name in ("token_id", "token"):
        value = update.get(name)
        if isinstance(value, str) and ("$" in value or value.startswith(_FILE_PREFIX)):
            raise UpdateError(
                "must not use $VAR or file:// indirection in a Panel update", key=name
            )
    merged = _merge_trees(_to_tree(config), update)
    api = update.get("api")
    ssl = api.get("ssl") if isinstance(api, Mapping) else None
    new_key = ssl.get("key") if isinstance(ssl, Mapping) else None
    if isinstance(new_key, str) and new_key.startswith(LETS_ENCRYPT_PREFIX):
        merged["api"]["ssl"]["cert"] = config.api.ssl.cert
        merged["api"]["ssl"]["key"] = config.api.ssl.key
    try:
        return _make_config(
            merged,
            text=None,
            environ=None,
            cwd=None,
            raw=config.raw,
            sources=config._token_sources,
        )
    except ConfigError as e:
        raise UpdateError(e.problem, key=e.key) from None


# --------------------------------------------------------------------------
# Programmatic changes


def replace_values(obj: _T, changes: Mapping[str, Any]) -> _T:
    """
    Return a copy of ``obj`` (a config dataclass) with dotted attribute paths
    replaced, e.g. ``replace_values(config, {"system.user.uid": 988})``.

    No validation is done: this is for values the daemon resolved itself
    (timezone, uid/gid, the resolved data directory).

    :raises KeyError: a path does not name an attribute.
    """
    for dotted, value in changes.items():
        obj = _replace_one(obj, dotted.split("."), value, dotted)
    return obj


def _replace_one(obj: Any, parts: list[str], value: Any, dotted: str) -> Any:
    name = parts[0]
    if not is_dataclass(obj) or name not in {f.name for f in _schema_fields(type(obj))}:
        raise KeyError(dotted)
    if len(parts) > 1:
        value = _replace_one(getattr(obj, name), parts[1:], value, dotted)
    return dataclasses.replace(cast(Any, obj), **{name: value})
