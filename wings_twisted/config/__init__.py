"""
The daemon configuration: ``config.yml`` turned into frozen dataclasses.

* :mod:`.schema` (with :mod:`.docker`): the dataclasses, one per section, and
  :class:`Config` for the whole file;
* :mod:`.load`: reading a file or plain data, with the defaults, the
  validation and the secrets;
* :mod:`.update`: ``POST /api/update``, values the daemon resolved itself,
  and writing the file back;
* :mod:`.checks`: what a daemon about to boot checks beyond loading
  (:func:`check_for_boot`) and the directories it creates;
* :mod:`.errors`: :class:`ConfigError` and :class:`UpdateError`;
* :mod:`.fields`: the field marks the schema declares and the others read.

Code outside the package imports from here.  The package does no I/O except
in :func:`load_config`, :func:`write_config`, :mod:`.checks` and the
``file://`` expansion of secrets, and imports nothing from Twisted.
"""

from __future__ import annotations

from .docker import (
    DockerConfig,
    DockerNetworkConfig,
    InstallerLimitsConfig,
    LogConfig,
    NetworkInterface,
    NetworkInterfacesConfig,
    OverheadConfig,
    RegistryConfig,
)
from .checks import DIRECTORY_KEYS, check_for_boot, ensure_directories
from .errors import ConfigError, UpdateError
from .load import DEFAULT_CONFIG_PATH, config_from_dict, load_config
from .schema import (
    ApiConfig,
    BackupsConfig,
    ChunkedUploadConfig,
    Config,
    CrashDetectionConfig,
    DownloadsConfig,
    EnvironmentConfig,
    PartialEditConfig,
    ProcessEnvironmentConfig,
    QuotasConfig,
    RemoteDownloadConfig,
    RemoteQueryConfig,
    RootlessConfig,
    SearchConfig,
    SftpConfig,
    SslConfig,
    SystemConfig,
    ThrottlesConfig,
    TokensConfig,
    TransfersConfig,
    UserConfig,
    WebsocketConfig,
)
from .update import (
    LETS_ENCRYPT_PREFIX,
    apply_panel_update,
    dump_config,
    replace_values,
    write_config,
)

__all__ = [
    "ApiConfig",
    "BackupsConfig",
    "ChunkedUploadConfig",
    "Config",
    "ConfigError",
    "CrashDetectionConfig",
    "DEFAULT_CONFIG_PATH",
    "DIRECTORY_KEYS",
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
    "check_for_boot",
    "config_from_dict",
    "dump_config",
    "ensure_directories",
    "load_config",
    "replace_values",
    "write_config",
]
