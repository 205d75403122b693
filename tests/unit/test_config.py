"""
Tests for L{wings_twisted.config}.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    UpdateError,
    apply_panel_update,
    config_from_dict,
    dump_config,
    load_config,
    replace_values,
    write_config,
)

from ..support import REPO

TOKEN = "s3cret-node-token"

EXAMPLE = FilePath(REPO).child("conf").child("config.example.yml")

# config.md §6.1, as the Panel generates it.
PANEL_GENERATED = """\
debug: false
uuid: 9a8e7c1c-3b71-4c55-a3f5-0f5e77a2c001
token_id: Q2hhbmdlTWVQbGVh
token: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
api:
  host: 0.0.0.0
  port: 8080
  ssl:
    enabled: true
    cert: /etc/letsencrypt/live/node.example.com/fullchain.pem
    key: /etc/letsencrypt/live/node.example.com/privkey.pem
  upload_limit: 100
system:
  data: /var/lib/pterodactyl/volumes
  sftp:
    bind_port: 2022
allowed_mounts: []
remote: https://panel.example.com
"""

# api.md §3.2 request body.
PANEL_UPDATE: dict[str, Any] = {
    "debug": True,
    "uuid": "11111111-2222-4333-8444-555555555555",
    "token_id": "NewTokenId000001",
    "token": "n" * 64,
    "api": {
        "host": "10.0.0.5",
        "port": 8443,
        "ssl": {
            "enabled": True,
            "cert": "/srv/certs/node.pem",
            "key": "/srv/certs/node.key",
        },
        "upload_limit": 250,
    },
    "system": {"data": "/srv/volumes", "sftp": {"bind_port": 2222}},
    "allowed_mounts": ["/srv/shared"],
    "remote": "https://panel.example.org",
}


def minimal(**extra: Any) -> Config:
    """
    A config built from a literal dict holding only a token and C{extra}.
    """
    return config_from_dict({"token": TOKEN, **extra})


class _FileMixin:
    """
    Helpers writing YAML files under a temporary directory.
    """

    mktemp: Any

    def write(self, text: str, name: str = "config.yml") -> str:
        """
        Write C{text} to a new file and return its path.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        path = directory.child(name)
        path.setContent(text.encode("utf-8"))
        return path.path

    def load(self, text: str, **kwargs: Any) -> Config:
        """
        Write C{text} and load it with an empty environment and C{/cwd}.
        """
        kwargs.setdefault("environ", {})
        kwargs.setdefault("cwd", "/cwd")
        return load_config(self.write(text), **kwargs)


class DefaultsTests(SynchronousTestCase):
    """
    A file holding only the token yields config.md's defaults.
    """

    def test_top_level_and_api(self) -> None:
        """
        Top-level and C{api} keys take config.md §2/§3 defaults.
        """
        c = minimal()
        self.assertEqual(c.debug, False)
        self.assertEqual(c.app_name, "Pterodactyl")
        self.assertEqual(c.uuid, "")
        self.assertEqual(c.token_id, "")
        self.assertEqual(c.token, TOKEN)
        self.assertEqual(c.remote, "")
        self.assertEqual(c.remote_query.timeout, 30)
        self.assertEqual(c.remote_query.boot_servers_per_page, 50)
        self.assertEqual(c.remote_query.custom_headers, {})
        self.assertEqual(c.allowed_mounts, ())
        self.assertEqual(c.allowed_origins, ())
        self.assertEqual(c.allow_cors_private_network, False)
        self.assertEqual(c.ignore_panel_config_updates, False)
        self.assertEqual(c.api.host, "0.0.0.0")
        self.assertEqual(c.api.port, 8080)
        self.assertEqual(c.api.ssl.enabled, False)
        self.assertEqual(c.api.ssl.cert, "")
        self.assertEqual(c.api.ssl.key, "")
        self.assertEqual(c.api.disable_remote_download, False)
        self.assertEqual(c.api.upload_limit, 100)
        self.assertEqual(c.api.trusted_proxies, ())
        self.assertEqual(c.api.downloads.allow_range_resume, True)
        self.assertEqual(c.api.remote_download.max_redirects, 10)

    def test_system(self) -> None:
        """
        C{system} keys take config.md §4 defaults; uid/gid are unset.
        """
        s = minimal().system
        self.assertEqual(s.root_directory, "/var/lib/pterodactyl")
        self.assertEqual(s.log_directory, "/var/log/pterodactyl")
        self.assertEqual(s.data, "/var/lib/pterodactyl/volumes")
        self.assertEqual(s.archive_directory, "/var/lib/pterodactyl/archives")
        self.assertEqual(s.backup_directory, "/var/lib/pterodactyl/backups")
        self.assertEqual(s.tmp_directory, "/tmp/pterodactyl")
        self.assertEqual(s.username, "pterodactyl")
        self.assertEqual(s.timezone, "")
        self.assertIsNone(s.user.uid)
        self.assertIsNone(s.user.gid)
        self.assertEqual(s.user.rootless.enabled, False)
        self.assertEqual(s.user.rootless.container_uid, 0)
        self.assertEqual(s.user.rootless.container_gid, 0)
        self.assertEqual(s.disk_check_interval, 150)
        self.assertEqual(s.activity_send_interval, 60)
        self.assertEqual(s.activity_send_count, 100)
        self.assertEqual(s.check_permissions_on_boot, True)
        self.assertEqual(s.enable_log_rotate, True)
        self.assertEqual(s.websocket_log_count, 150)
        self.assertEqual(s.openat_mode, "auto")
        self.assertEqual(s.sftp.bind_address, "0.0.0.0")
        self.assertEqual(s.sftp.bind_port, 2022)
        self.assertEqual(s.sftp.read_only, False)
        self.assertEqual(s.sftp.key_only, False)
        self.assertEqual(s.crash_detection.enabled, True)
        self.assertEqual(s.crash_detection.detect_clean_exit_as_crash, True)
        self.assertEqual(s.crash_detection.timeout, 60)
        self.assertEqual(s.crash_detection_activity_lines, 2)
        self.assertEqual(s.backups.write_limit, 0)
        self.assertEqual(s.backups.compression_level, "best_speed")
        self.assertEqual(s.backups.max_concurrent, 0)
        self.assertEqual(s.backups.remove_backups_on_server_delete, False)
        self.assertEqual(s.backups.restore_host_allowlist, ())
        self.assertEqual(s.transfers.download_limit, 0)
        self.assertEqual(s.transfers.send_checksum_archive, True)
        self.assertEqual(s.transfers.include_backups, False)
        self.assertEqual(s.transfers.include_install_logs, False)

    def test_docker(self) -> None:
        """
        C{docker} keys take config.md §5 defaults.
        """
        d = minimal().docker
        self.assertEqual(d.network.interface, "172.18.0.1")
        self.assertEqual(d.network.dns, ("1.1.1.1", "1.0.0.1"))
        self.assertEqual(d.network.name, "pterodactyl_nw")
        self.assertEqual(d.network.ispn, False)
        self.assertEqual(d.network.driver, "bridge")
        self.assertEqual(d.network.network_mode, "pterodactyl_nw")
        self.assertEqual(d.network.is_internal, False)
        self.assertEqual(d.network.enable_icc, True)
        self.assertEqual(d.network.network_mtu, 1500)
        self.assertEqual(d.network.interfaces.v4.subnet, "172.18.0.0/16")
        self.assertEqual(d.network.interfaces.v4.gateway, "172.18.0.1")
        self.assertEqual(d.network.interfaces.v6.subnet, "fdba:17c8:6c94::/64")
        self.assertEqual(d.network.interfaces.v6.gateway, "fdba:17c8:6c94::1011")
        self.assertEqual(d.network.ipv6, True)
        self.assertEqual(d.domainname, "")
        self.assertEqual(d.registries, {})
        self.assertEqual(d.tmpfs_size, 100)
        self.assertEqual(d.container_pid_limit, 512)
        self.assertEqual(d.installer_limits.memory, 1024)
        self.assertEqual(d.installer_limits.cpu, 100)
        self.assertEqual(d.overhead.override, False)
        self.assertEqual(d.overhead.default_multiplier, 1.05)
        self.assertEqual(d.overhead.multipliers, {})
        self.assertEqual(d.use_performant_inspect, True)
        self.assertEqual(d.userns_mode, "")
        self.assertEqual(d.log_config.type, "local")
        self.assertEqual(
            d.log_config.config,
            {"max-size": "5m", "max-file": "1", "compress": "false", "mode": "non-blocking"},
        )
        self.assertEqual(d.system_ips, ())

    def test_throttles_and_project_sections(self) -> None:
        """
        C{throttles} (§7) and the project sections (§11) take their defaults.
        """
        c = minimal()
        self.assertEqual(c.throttles.enabled, True)
        self.assertEqual(c.throttles.lines, 2000)
        self.assertEqual(c.throttles.line_reset_interval, 100)
        self.assertEqual(c.environment.driver, "docker")
        self.assertEqual(c.environment.process.use_pty, True)
        self.assertEqual(c.environment.process.shell, "/bin/bash")
        self.assertEqual(c.environment.process.memory_watchdog, True)
        self.assertEqual(c.environment.process.allow_unsandboxed_install, False)
        self.assertEqual(c.tokens.require_scope, False)
        self.assertEqual(c.websocket.emit_suffixed_backup_events, True)
        self.assertEqual(c.websocket.emit_fork_backup_events, False)
        self.assertEqual(c.websocket.max_connections_per_server, 30)
        self.assertEqual(c.websocket.auth_timeout, 30)
        self.assertEqual(c.websocket.rate_limits, True)
        self.assertEqual(c.websocket.close_on_suspend, False)

    def test_fork_sections(self) -> None:
        """
        The fork sections (§9) take their defaults.
        """
        c = minimal()
        self.assertEqual(
            c.search.blacklisted_dirs,
            ("node_modules", ".git", ".wine", "appcache", "depotcache", "vendor"),
        )
        self.assertEqual(c.search.max_recursion_depth, 8)
        self.assertEqual(c.chunked_upload.max_file_size, 10240)
        self.assertEqual(c.chunked_upload.max_concurrent_uploads, 5)
        self.assertEqual(c.chunked_upload.chunk_expiration_hours, 24)
        self.assertEqual(c.partial_edit.max_lines_per_request, 500)
        self.assertEqual(c.partial_edit.max_line_size, 10240)
        self.assertEqual(c.partial_edit.enable_line_caching, True)
        self.assertEqual(c.block_base_dir_mount, True)

    def test_default_path(self) -> None:
        """
        The default configuration path is Wings' one.
        """
        self.assertEqual(DEFAULT_CONFIG_PATH, "/etc/pterodactyl/config.yml")


class MergeTests(SynchronousTestCase):
    """
    Present keys replace defaults, mappings merge, lists replace.
    """

    def test_nested_mapping_merges(self) -> None:
        """
        Setting one key of a section keeps the defaults of its siblings.
        """
        c = minimal(api={"port": 9090, "ssl": {"enabled": True}})
        self.assertEqual(c.api.port, 9090)
        self.assertEqual(c.api.host, "0.0.0.0")
        self.assertEqual(c.api.ssl.enabled, True)
        self.assertEqual(c.api.ssl.cert, "")

    def test_nested_default_instance_merges(self) -> None:
        """
        A partial C{interfaces.v4} keeps the v4 default of the missing key.
        """
        c = minimal(docker={"network": {"interfaces": {"v4": {"subnet": "10.9.0.0/16"}}}})
        self.assertEqual(c.docker.network.interfaces.v4.subnet, "10.9.0.0/16")
        self.assertEqual(c.docker.network.interfaces.v4.gateway, "172.18.0.1")
        self.assertEqual(c.docker.network.interfaces.v6.subnet, "fdba:17c8:6c94::/64")

    def test_lists_replace(self) -> None:
        """
        A list in the file replaces the default list entirely.
        """
        c = minimal(docker={"network": {"dns": ["8.8.8.8"]}})
        self.assertEqual(c.docker.network.dns, ("8.8.8.8",))

    def test_log_config_map_merges_into_default(self) -> None:
        """
        C{docker.log_config.config} is merged into its default map.
        """
        c = minimal(docker={"log_config": {"config": {"max-size": "10m", "labels": "x"}}})
        self.assertEqual(
            c.docker.log_config.config,
            {
                "max-size": "10m",
                "max-file": "1",
                "compress": "false",
                "mode": "non-blocking",
                "labels": "x",
            },
        )
        self.assertEqual(c.docker.log_config.type, "local")

    def test_registries_and_multipliers(self) -> None:
        """
        Registries become typed entries; multiplier keys are integers.
        """
        c = minimal(
            docker={
                "registries": {"ghcr.io": {"username": "u", "password": "p"}},
                "overhead": {"override": True, "multipliers": {2048: 1.15, "4096": 1}},
            }
        )
        self.assertEqual(c.docker.registries["ghcr.io"].username, "u")
        self.assertEqual(c.docker.registries["ghcr.io"].password, "p")
        self.assertEqual(c.docker.overhead.multipliers, {2048: 1.15, 4096: 1.0})

    def test_null_section_keeps_defaults(self) -> None:
        """
        A section given as null (all keys commented out) keeps its defaults.
        """
        c = minimal(throttles=None)
        self.assertEqual(c.throttles.lines, 2000)

    def test_null_scalar_is_zero(self) -> None:
        """
        A null scalar gives the zero value of its type, as yaml.v2 does.
        """
        c = minimal(uuid=None, api={"upload_limit": None, "trusted_proxies": None})
        self.assertEqual(c.uuid, "")
        self.assertEqual(c.api.upload_limit, 0)
        self.assertEqual(c.api.trusted_proxies, ())

    def test_float_accepts_integer(self) -> None:
        """
        A float key accepts an integer.
        """
        c = minimal(docker={"overhead": {"default_multiplier": 2}})
        self.assertEqual(c.docker.overhead.default_multiplier, 2.0)
        self.assertIsInstance(c.docker.overhead.default_multiplier, float)

    def test_pelican_keys(self) -> None:
        """
        Keys of Pelican and newer versions (§10) are accepted, typed or raw.
        """
        c = minimal(
            api={"remote_download": {"max_redirects": 3}},
            remote_query={"custom_headers": {"CF-Access-Client-Id": "abc"}},
            system={
                "user": {"passwd": {"enable": True, "directory": "/run/wings/etc"}},
                "machine_id": {"enable": False},
                "quotas": {"enabled": True},
                "crash_detection_activity_lines": 5,
                "backups": {"restore_host_allowlist": ["10.0.0.0/8"]},
                "transfers": {"storage_pool": {"enabled": True}},
                "sftp": {"key_only": True},
            },
            docker={"network": {"IPv6": False}, "system_ips": ["203.0.113.4"]},
            BlockBaseDirMount=False,
        )
        self.assertEqual(c.api.remote_download.max_redirects, 3)
        self.assertEqual(c.remote_query.custom_headers, {"CF-Access-Client-Id": "abc"})
        self.assertEqual(c.system.user.passwd, {"enable": True, "directory": "/run/wings/etc"})
        self.assertEqual(c.system.machine_id, {"enable": False})
        self.assertEqual(c.system.quotas.enabled, True)
        self.assertEqual(c.system.crash_detection_activity_lines, 5)
        self.assertEqual(c.system.backups.restore_host_allowlist, ("10.0.0.0/8",))
        self.assertEqual(c.system.transfers.storage_pool, {"enabled": True})
        self.assertEqual(c.system.sftp.key_only, True)
        self.assertEqual(c.docker.network.ipv6, False)
        self.assertEqual(c.docker.system_ips, ("203.0.113.4",))
        self.assertEqual(c.block_base_dir_mount, False)

    def test_fork_sections_capitalised(self) -> None:
        """
        C{Search}, C{ChunkedUpload} and C{PartialEdit} are read as written.
        """
        c = minimal(
            Search={"blacklisted_dirs": ["cache"], "max_recursion_depth": 3},
            ChunkedUpload={"max_file_size": 100},
            PartialEdit={"enable_line_caching": False},
        )
        self.assertEqual(c.search.blacklisted_dirs, ("cache",))
        self.assertEqual(c.search.max_recursion_depth, 3)
        self.assertEqual(c.chunked_upload.max_file_size, 100)
        self.assertEqual(c.chunked_upload.max_concurrent_uploads, 5)
        self.assertEqual(c.partial_edit.enable_line_caching, False)

    def test_fork_sections_snake_case(self) -> None:
        """
        The snake_case spellings are accepted too.
        """
        c = minimal(
            search={"max_recursion_depth": 2},
            chunked_upload={"chunk_expiration_hours": 1},
            partial_edit={"max_line_size": 80},
        )
        self.assertEqual(c.search.max_recursion_depth, 2)
        self.assertEqual(c.chunked_upload.chunk_expiration_hours, 1)
        self.assertEqual(c.partial_edit.max_line_size, 80)

    def test_fork_section_both_spellings(self) -> None:
        """
        With both spellings present they merge; the capitalised one wins.
        """
        c = minimal(
            search={"max_recursion_depth": 2, "blacklisted_dirs": ["a"]},
            Search={"max_recursion_depth": 4},
        )
        self.assertEqual(c.search.max_recursion_depth, 4)
        self.assertEqual(c.search.blacklisted_dirs, ("a",))

    def test_throttles_legacy_keys(self) -> None:
        """
        The old throttle keys are accepted and ignored.
        """
        c = minimal(
            throttles={
                "enabled": False,
                "maximum_trigger_count": 5,
                "decay_interval": 10000,
                "stop_grace_period": 15,
            }
        )
        self.assertEqual(c.throttles.enabled, False)
        self.assertEqual(c.throttles.lines, 2000)

    def test_unknown_keys_ignored(self) -> None:
        """
        Unknown keys at any level are no error and are kept in C{raw}.
        """
        c = minimal(future_key=1, api={"future": {"x": 1}})
        self.assertEqual(c, minimal())
        self.assertEqual(c.raw["future_key"], 1)
        self.assertEqual(c.raw["api"], {"future": {"x": 1}})


class DerivedTests(SynchronousTestCase):
    """
    Helpers computed from configuration values.
    """

    def test_remote_base(self) -> None:
        """
        C{remote_base} strips exactly one trailing slash.
        """
        self.assertEqual(minimal(remote="https://p.example").remote_base, "https://p.example")
        self.assertEqual(minimal(remote="https://p.example/").remote_base, "https://p.example")
        self.assertEqual(minimal(remote="https://p.example//").remote_base, "https://p.example/")
        self.assertEqual(minimal().remote_base, "")

    def test_upload_limit_bytes(self) -> None:
        """
        C{upload_limit_bytes} is the MiB limit in bytes.
        """
        self.assertEqual(minimal().api.upload_limit_bytes, 100 * 1024 * 1024)
        self.assertEqual(minimal(api={"upload_limit": 1}).api.upload_limit_bytes, 1048576)

    def test_token_not_in_repr(self) -> None:
        """
        The node token never appears in the config's repr.
        """
        self.assertNotIn(TOKEN, repr(minimal()))

    def test_frozen(self) -> None:
        """
        Config objects are immutable.
        """
        c = minimal()
        with self.assertRaises(AttributeError):
            c.api.port = 1  # type: ignore[misc]

    def test_replace_values(self) -> None:
        """
        C{replace_values} replaces dotted attribute paths in a copy.
        """
        c = minimal()
        d = replace_values(c, {"system.user.uid": 988, "system.user.gid": 989, "debug": True})
        self.assertEqual((d.system.user.uid, d.system.user.gid, d.debug), (988, 989, True))
        self.assertIsNone(c.system.user.uid)
        self.assertEqual(d.token, TOKEN)

    def test_replace_values_unknown_path(self) -> None:
        """
        C{replace_values} refuses a path that names no attribute.
        """
        self.assertRaises(KeyError, replace_values, minimal(), {"system.nope": 1})


class YamlTests(_FileMixin, SynchronousTestCase):
    """
    YAML 1.1 parsing as Wings (yaml.v2) does it.
    """

    def test_yaml11_booleans(self) -> None:
        """
        yes/no/on/off/y/n/True are booleans.
        """
        c = self.load(
            "token: t\n"
            "debug: yes\n"
            "allow_cors_private_network: on\n"
            "api:\n  ssl:\n    enabled: Y\n"
            "system:\n  check_permissions_on_boot: no\n  enable_log_rotate: off\n"
            "  sftp:\n    read_only: y\n"
            "throttles:\n  enabled: n\n"
            "tokens:\n  require_scope: True\n"
        )
        self.assertEqual(c.debug, True)
        self.assertEqual(c.allow_cors_private_network, True)
        self.assertEqual(c.api.ssl.enabled, True)
        self.assertEqual(c.system.check_permissions_on_boot, False)
        self.assertEqual(c.system.enable_log_rotate, False)
        self.assertEqual(c.system.sftp.read_only, True)
        self.assertEqual(c.throttles.enabled, False)
        self.assertEqual(c.tokens.require_scope, True)

    def test_quoted_boolean_is_a_string(self) -> None:
        """
        A quoted "yes" is a string, which a boolean key refuses.
        """
        path = self.write('token: t\ndebug: "yes"\n')
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(str(e), f"{path}: debug: expected a boolean (true or false), got 'yes'")

    def test_string_fields_keep_text(self) -> None:
        """
        A scalar in a string key keeps the text written, whatever it looks like.
        """
        c = self.load(
            "token: 0123\n"
            "token_id: 1234567812345678\n"
            "uuid: 2020-01-01\n"
            "app_name: yes\n"
            "docker:\n  log_config:\n    config:\n      max-file: 3\n      compress: false\n"
        )
        self.assertEqual(c.token, "0123")
        self.assertEqual(c.token_id, "1234567812345678")
        self.assertEqual(c.uuid, "2020-01-01")
        self.assertEqual(c.app_name, "yes")
        self.assertEqual(c.docker.log_config.config["max-file"], "3")
        self.assertEqual(c.docker.log_config.config["compress"], "false")

    def test_empty_value_and_empty_section(self) -> None:
        """
        An empty scalar is its zero value; an empty section keeps defaults.
        """
        c = self.load("token: t\nuuid:\napi:\n  ssl:\n    cert:\nthrottles:\n")
        self.assertEqual(c.uuid, "")
        self.assertEqual(c.api.ssl.cert, "")
        self.assertEqual(c.throttles.lines, 2000)

    def test_empty_file_is_refused_for_its_token(self) -> None:
        """
        An empty file parses, then fails for the missing token.
        """
        path = self.write("")
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(e.key, "token")

    def test_anchor_and_merge_key(self) -> None:
        """
        YAML anchors and merge keys work.
        """
        c = self.load(
            "token: t\n"
            "base: &b\n  host: 10.1.1.1\n"
            "api:\n  <<: *b\n  port: 9000\n"
        )
        self.assertEqual((c.api.host, c.api.port), ("10.1.1.1", 9000))


class ErrorTests(_FileMixin, SynchronousTestCase):
    """
    Invalid configurations raise a one-line C{ConfigError}.
    """

    def assertOneLine(self, error: ConfigError) -> None:
        """
        The message of C{error} is a single line.
        """
        self.assertNotIn("\n", str(error))

    def refused(self, text: str) -> tuple[str, ConfigError]:
        """
        Load C{text} from a file and return its path and the error.
        """
        path = self.write(text)
        e = self.assertRaises(ConfigError, load_config, path, environ={}, cwd="/")
        self.assertOneLine(e)
        return path, e

    def test_wrong_type_message(self) -> None:
        """
        A string where an integer is expected names the file and dotted key.
        """
        path, e = self.refused("token: t\napi:\n  port: abc\n")
        self.assertEqual(str(e), f"{path}: api.port: expected an integer, got 'abc'")
        self.assertEqual((e.source, e.key), (path, "api.port"))

    def test_config_yml_prefix(self) -> None:
        """
        The message starts with the path as given, e.g. C{config.yml}.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("config.yml").setContent(b"token: t\napi:\n  port: abc\n")
        cwd = os.getcwd()
        os.chdir(directory.path)
        self.addCleanup(os.chdir, cwd)
        e = self.assertRaises(ConfigError, load_config, "config.yml", environ={})
        self.assertEqual(str(e), "config.yml: api.port: expected an integer, got 'abc'")

    def test_integer_refuses_boolean(self) -> None:
        """
        An integer key refuses a boolean.
        """
        path, e = self.refused("token: t\nsystem:\n  disk_check_interval: true\n")
        self.assertEqual(
            str(e), f"{path}: system.disk_check_interval: expected an integer, got true"
        )

    def test_integer_refuses_fraction(self) -> None:
        """
        An integer key refuses a non-whole number but takes a whole one.
        """
        path, e = self.refused("token: t\napi:\n  upload_limit: 1.5\n")
        self.assertEqual(str(e), f"{path}: api.upload_limit: expected an integer, got 1.5")
        whole = self.load("token: t\napi:\n  upload_limit: 200.0\n")
        self.assertEqual(whole.api.upload_limit, 200)

    def test_boolean_refuses_number(self) -> None:
        """
        A boolean key refuses a number.
        """
        path, e = self.refused("token: t\nwebsocket:\n  rate_limits: 1\n")
        self.assertEqual(
            str(e), f"{path}: websocket.rate_limits: expected a boolean (true or false), got 1"
        )

    def test_float_refuses_string(self) -> None:
        """
        A float key refuses a string.
        """
        path, e = self.refused("token: t\ndocker:\n  overhead:\n    default_multiplier: lots\n")
        self.assertEqual(
            str(e), f"{path}: docker.overhead.default_multiplier: expected a number, got 'lots'"
        )

    def test_section_not_a_mapping(self) -> None:
        """
        A section given as a scalar is refused.
        """
        path, e = self.refused("token: t\nsystem: 5\n")
        self.assertEqual(str(e), f"{path}: system: expected a mapping, got 5")

    def test_list_expected(self) -> None:
        """
        A list key given a scalar is refused.
        """
        path, e = self.refused("token: t\nallowed_origins: https://x.example\n")
        self.assertEqual(
            str(e), f"{path}: allowed_origins: expected a list, got 'https://x.example'"
        )

    def test_list_item_from_dict(self) -> None:
        """
        From a dict, a list item of the wrong type is named with its index.
        """
        e = self.assertRaises(
            ConfigError, config_from_dict, {"token": "t", "api": {"trusted_proxies": ["a", 1]}}
        )
        self.assertEqual(str(e), "api.trusted_proxies[1]: expected a string, got 1")

    def test_string_from_dict_refuses_number(self) -> None:
        """
        From a dict (no YAML text), a string key refuses a number.
        """
        e = self.assertRaises(ConfigError, config_from_dict, {"token": "t", "uuid": 5})
        self.assertEqual(str(e), "uuid: expected a string, got 5")

    def test_string_refuses_mapping(self) -> None:
        """
        A string key refuses a mapping, even from a file.
        """
        path, e = self.refused("token: t\nremote:\n  url: x\n")
        self.assertEqual(str(e), f"{path}: remote: expected a string, got a mapping")

    def test_port_out_of_range(self) -> None:
        """
        Ports outside 0-65535 are refused.
        """
        path, e = self.refused("token: t\napi:\n  port: 70000\n")
        self.assertEqual(str(e), f"{path}: api.port: must be between 0 and 65535, got 70000")
        path, e = self.refused("token: t\nsystem:\n  sftp:\n    bind_port: -1\n")
        self.assertEqual(
            str(e), f"{path}: system.sftp.bind_port: must be between 0 and 65535, got -1"
        )

    def test_port_zero_allowed(self) -> None:
        """
        Port 0 (let the system choose) is accepted.
        """
        self.assertEqual(minimal(api={"port": 0}).api.port, 0)

    def test_environment_driver(self) -> None:
        """
        C{environment.driver} must be docker or process.
        """
        path, e = self.refused("token: t\nenvironment:\n  driver: lxc\n")
        self.assertEqual(
            str(e), f"{path}: environment.driver: expected one of docker, process, got 'lxc'"
        )
        self.assertEqual(minimal(environment={"driver": "process"}).environment.driver, "process")

    def test_empty_token(self) -> None:
        """
        An empty or missing token is refused.
        """
        message = "token: must not be empty; the daemon refuses to start without a node token"
        path, e = self.refused('token: ""\n')
        self.assertEqual(str(e), f"{path}: {message}")
        path, e = self.refused("debug: false\n")
        self.assertEqual(str(e), f"{path}: {message}")
        e = self.assertRaises(ConfigError, config_from_dict, {})
        self.assertEqual(str(e), message)

    def test_empty_directory(self) -> None:
        """
        An empty system directory path is refused.
        """
        path, e = self.refused("token: t\nsystem:\n  data: ''\n")
        self.assertEqual(str(e), f"{path}: system.data: must not be empty")

    def test_missing_file(self) -> None:
        """
        A missing file is reported with its path.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(
            str(e), f"{path}: cannot read the configuration file: No such file or directory"
        )

    def test_unreadable_file(self) -> None:
        """
        A path that cannot be read (a directory) is reported.
        """
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertTrue(str(e).startswith(f"{path}: cannot read the configuration file: "))
        self.assertOneLine(e)

    def test_yaml_syntax_error(self) -> None:
        """
        A YAML syntax error names its line.
        """
        path, e = self.refused("token: t\napi:\n  port: 8080\n host: x\n")
        self.assertTrue(str(e).startswith(f"{path}: line 4, column 2: invalid YAML: "), str(e))

    def test_top_level_not_mapping(self) -> None:
        """
        A document that is not a mapping is refused.
        """
        path, e = self.refused("- a\n- b\n")
        self.assertEqual(str(e), f"{path}: the top level must be a mapping of keys, got a list")
        e = self.assertRaises(ConfigError, config_from_dict, ["a"])  # type: ignore[arg-type]
        self.assertEqual(str(e), "the top level must be a mapping of keys, got a list")

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is refused.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("c.yml").setContent(b"token: \xff\xfe\n")
        path = directory.child("c.yml").path
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(str(e), f"{path}: the file is not valid UTF-8")

    def test_dict_errors_have_no_source(self) -> None:
        """
        C{config_from_dict} errors name only the key, or a given source.
        """
        e = self.assertRaises(ConfigError, config_from_dict, {"token": "t", "api": {"port": "x"}})
        self.assertEqual(str(e), "api.port: expected an integer, got 'x'")
        e = self.assertRaises(
            ConfigError, config_from_dict, {"token": "t", "debug": 2}, source="test.yml"
        )
        self.assertEqual(str(e), "test.yml: debug: expected a boolean (true or false), got 2")

    def test_long_value_truncated(self) -> None:
        """
        A long bad value is shortened in the message.
        """
        e = self.assertRaises(ConfigError, config_from_dict, {"token": "t", "debug": "x" * 500})
        self.assertLess(len(str(e)), 120)


class CredentialTests(_FileMixin, SynchronousTestCase):
    """
    Environment overrides, C{${VAR}} and C{file://} for token_id/token.
    """

    def test_environment_overrides(self) -> None:
        """
        Non-empty WINGS_TOKEN_ID / WINGS_TOKEN replace the file values.
        """
        c = self.load(
            "token_id: fileid\ntoken: filetoken\n",
            environ={"WINGS_TOKEN_ID": "envid", "WINGS_TOKEN": "envtoken"},
        )
        self.assertEqual((c.token_id, c.token), ("envid", "envtoken"))

    def test_empty_environment_variable_ignored(self) -> None:
        """
        An empty override variable leaves the file value.
        """
        c = self.load("token: filetoken\n", environ={"WINGS_TOKEN": ""})
        self.assertEqual(c.token, "filetoken")

    def test_environment_token_satisfies_requirement(self) -> None:
        """
        A token from the environment is enough even if the file has none.
        """
        c = self.load("debug: false\n", environ={"WINGS_TOKEN": "envtoken"})
        self.assertEqual(c.token, "envtoken")

    def test_variable_expansion(self) -> None:
        """
        C{${VAR}} and C{$VAR} are expanded from the environment.
        """
        c = self.load(
            "token_id: ${ID_VAR}\ntoken: pre-$TOKEN_VAR-post\n",
            environ={"ID_VAR": "theid", "TOKEN_VAR": "abc"},
        )
        self.assertEqual((c.token_id, c.token), ("theid", "pre-abc-post"))

    def test_empty_variable_reference(self) -> None:
        """
        C{${}} and unset variables expand to nothing.
        """
        c = self.load("token: a${}b$UNSET_VARIABLE_X\n", environ={})
        self.assertEqual(c.token, "ab")

    def test_file_reference(self) -> None:
        """
        C{file://path} is replaced by the file content minus trailing newlines.
        """
        secret = FilePath(self.mktemp())
        secret.setContent(b"from-file-token\r\n")
        c = self.load(f"token: file://{secret.path}\n")
        self.assertEqual(c.token, "from-file-token")

    def test_file_reference_after_expansion(self) -> None:
        """
        Variables are expanded before the file is read (systemd credentials).
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("wings-token").setContent(b"credential\n")
        c = self.load(
            "token: file://${CREDENTIALS_DIRECTORY}/wings-token\n",
            environ={"CREDENTIALS_DIRECTORY": directory.path},
        )
        self.assertEqual(c.token, "credential")

    def test_unreadable_file_reference(self) -> None:
        """
        An unreadable C{file://} reference is a one-line error on the key.
        """
        missing = self.mktemp()
        path = self.write(f"token: file://{missing}\n")
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(
            str(e), f"{path}: token: cannot read file://{missing}: No such file or directory"
        )

    def test_empty_file_reference(self) -> None:
        """
        A C{file://} reference to an empty file leaves an empty token: refused.
        """
        secret = FilePath(self.mktemp())
        secret.setContent(b"\n")
        path = self.write(f"token: file://{secret.path}\n")
        e = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(e.key, "token")

    def test_config_from_dict_environment(self) -> None:
        """
        C{config_from_dict} uses an empty environment unless given one.
        """
        self.assertEqual(config_from_dict({"token": "$T"}, environ={"T": "x"}).token, "x")
        e = self.assertRaises(ConfigError, config_from_dict, {"token": "$NOT_SET_ANYWHERE"})
        self.assertEqual(e.key, "token")

    def test_dump_keeps_reference(self) -> None:
        """
        The rewritten file keeps the reference, never the resolved secret.
        """
        secret = FilePath(self.mktemp())
        secret.setContent(b"very-secret\n")
        c = self.load(f"token_id: ${{ID}}\ntoken: file://{secret.path}\n", environ={"ID": "i"})
        dumped = yaml.safe_load(dump_config(c))
        self.assertEqual(dumped["token"], f"file://{secret.path}")
        self.assertEqual(dumped["token_id"], "${ID}")
        self.assertNotIn("very-secret", dump_config(c))

    def test_dump_keeps_file_value_under_override(self) -> None:
        """
        An environment override is not written to the file.
        """
        c = self.load("token: filetoken\n", environ={"WINGS_TOKEN": "envtoken"})
        self.assertEqual(yaml.safe_load(dump_config(c))["token"], "filetoken")


class PathTests(_FileMixin, SynchronousTestCase):
    """
    Relative system directories are made absolute at load time.
    """

    def test_relative_resolved_against_cwd(self) -> None:
        """
        Relative directory paths are joined to the working directory.
        """
        c = self.load(
            "token: t\nsystem:\n  data: ./var/volumes\n  root_directory: var/../lib\n"
            "  tmp_directory: /abs/tmp\n",
            cwd="/srv/wings",
        )
        self.assertEqual(c.system.data, "/srv/wings/var/volumes")
        self.assertEqual(c.system.root_directory, "/srv/wings/lib")
        self.assertEqual(c.system.tmp_directory, "/abs/tmp")
        self.assertEqual(c.system.log_directory, "/var/log/pterodactyl")

    def test_default_cwd(self) -> None:
        """
        Without C{cwd}, the process working directory is used.
        """
        c = load_config(self.write("token: t\nsystem:\n  data: vol\n"), environ={})
        self.assertEqual(c.system.data, os.path.join(os.getcwd(), "vol"))

    def test_dict_paths_untouched_without_cwd(self) -> None:
        """
        C{config_from_dict} leaves relative paths alone unless given C{cwd}.
        """
        self.assertEqual(minimal(system={"data": "vol"}).system.data, "vol")
        c = config_from_dict({"token": "t", "system": {"data": "vol"}}, cwd="/x")
        self.assertEqual(c.system.data, "/x/vol")


class DumpTests(_FileMixin, SynchronousTestCase):
    """
    C{dump_config} and C{write_config}.
    """

    FULL = (
        "token_id: abc\n"
        "token: t\n"
        "uuid: 12345\n"
        "future_top: {a: 1}\n"
        "api:\n  port: 8443\n  future_api: [1, 2]\n"
        "  ssl:\n    enabled: yes\n    future_ssl: x\n"
        "system:\n  username: y\n  user:\n    uid: 1000\n    gid: 1001\n"
        "  future_system: true\n"
        "docker:\n  network:\n    future_net: 1\n"
        "  registries:\n    ghcr.io: {username: u, password: p, email: e}\n"
        "  overhead:\n    multipliers: {2048: 1.2}\n"
        "  log_config:\n    config: {max-size: 10m}\n"
        "throttles:\n  lines: 10\n  maximum_trigger_count: 5\n  decay_interval: 10000\n"
        "search:\n  max_recursion_depth: 2\n  future_search: 1\n"
        "BlockBaseDirMount: false\n"
    )

    def test_round_trip(self) -> None:
        """
        A dumped configuration loads back to an equal one.
        """
        c = self.load(self.FULL)
        again = self.load(dump_config(c))
        self.assertEqual(again, c)

    def test_unknown_keys_survive(self) -> None:
        """
        Unknown keys at every level are written back.
        """
        c = self.load(self.FULL)
        tree = yaml.safe_load(dump_config(c))
        self.assertEqual(tree["future_top"], {"a": 1})
        self.assertEqual(tree["api"]["future_api"], [1, 2])
        self.assertEqual(tree["api"]["ssl"]["future_ssl"], "x")
        self.assertEqual(tree["system"]["future_system"], True)
        self.assertEqual(tree["docker"]["network"]["future_net"], 1)
        self.assertEqual(tree["docker"]["registries"]["ghcr.io"]["email"], "e")
        self.assertEqual(tree["throttles"]["maximum_trigger_count"], 5)
        self.assertEqual(tree["throttles"]["decay_interval"], 10000)
        self.assertEqual(tree["Search"]["future_search"], 1)
        self.assertNotIn("search", tree)
        self.assertEqual(self.load(dump_config(c)).raw["future_top"], {"a": 1})

    def test_every_known_key_written(self) -> None:
        """
        Defaults are written too, with the file's spelling of each key.
        """
        tree = yaml.safe_load(dump_config(self.load(self.FULL)))
        self.assertEqual(tree["api"]["port"], 8443)
        self.assertEqual(tree["api"]["host"], "0.0.0.0")
        self.assertEqual(tree["api"]["ssl"]["enabled"], True)
        self.assertEqual(tree["uuid"], "12345")
        self.assertEqual(tree["system"]["username"], "y")
        self.assertEqual(tree["system"]["user"]["uid"], 1000)
        self.assertEqual(tree["system"]["sftp"]["bind_port"], 2022)
        self.assertEqual(tree["system"]["crash_detection"]["timeout"], 60)
        self.assertEqual(tree["docker"]["network"]["interfaces"]["v6"]["gateway"],
                         "fdba:17c8:6c94::1011")
        self.assertEqual(tree["docker"]["network"]["IPv6"], True)
        self.assertEqual(tree["docker"]["overhead"]["multipliers"], {2048: 1.2})
        self.assertEqual(tree["docker"]["log_config"]["config"]["max-file"], "1")
        self.assertEqual(tree["docker"]["log_config"]["config"]["max-size"], "10m")
        self.assertEqual(tree["throttles"]["lines"], 10)
        self.assertEqual(tree["remote_query"]["timeout"], 30)
        self.assertEqual(tree["environment"]["driver"], "docker")
        self.assertEqual(tree["websocket"]["auth_timeout"], 30)
        self.assertEqual(tree["ChunkedUpload"]["max_file_size"], 10240)
        self.assertEqual(tree["PartialEdit"]["max_lines_per_request"], 500)
        self.assertEqual(tree["BlockBaseDirMount"], False)

    def test_unset_uid_not_written(self) -> None:
        """
        Unset uid/gid are left out of the file.
        """
        tree = yaml.safe_load(dump_config(minimal()))
        self.assertNotIn("uid", tree["system"]["user"])
        self.assertNotIn("gid", tree["system"]["user"])

    def test_tricky_strings_stay_strings(self) -> None:
        """
        Strings that look like other YAML types are quoted when written.
        """
        c = minimal(token_id="0123", uuid="y", app_name="true", remote="null")
        again = self.load(dump_config(c))
        self.assertEqual(
            (again.token_id, again.uuid, again.app_name, again.remote),
            ("0123", "y", "true", "null"),
        )

    def test_dict_round_trip(self) -> None:
        """
        A config built from a dict survives dump and load.
        """
        c = minimal(api={"trusted_proxies": ["10.0.0.0/8"]}, allowed_mounts=["/srv"])
        self.assertEqual(self.load(dump_config(c)), c)

    def test_write_config(self) -> None:
        """
        C{write_config} replaces the file with mode 0600 and no temporary left.
        """
        path = self.write("token: old\n")
        os.chmod(path, 0o644)
        c = self.load(self.FULL)
        write_config(c, path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["config.yml"])
        self.assertEqual(load_config(path, environ={}, cwd="/cwd"), c)

    def test_write_config_new_file(self) -> None:
        """
        C{write_config} creates a missing file.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        path = directory.child("config.yml").path
        write_config(minimal(), path)
        self.assertEqual(load_config(path, environ={}), minimal())

    def test_write_config_follows_symlink(self) -> None:
        """
        A symlinked configuration path keeps its link; the target is replaced.
        """
        target = self.write("token: old\n", name="real.yml")
        link = os.path.join(os.path.dirname(target), "config.yml")
        os.symlink("real.yml", link)
        write_config(minimal(), link)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(load_config(target, environ={}).token, TOKEN)

    def test_write_config_failure(self) -> None:
        """
        A failed write raises C{OSError} and leaves nothing behind.
        """
        missing = os.path.join(self.mktemp(), "config.yml")
        self.assertRaises(OSError, write_config, minimal(), missing)


class PanelUpdateTests(SynchronousTestCase):
    """
    C{apply_panel_update}: api.md §3.2 / config.md §6.2.
    """

    def current(self) -> Config:
        """
        A node configuration with custom certificates and unknown keys.
        """
        return config_from_dict(
            {
                "token_id": "OldTokenId000001",
                "token": "o" * 64,
                "uuid": "old",
                "api": {
                    "port": 8080,
                    "ssl": {"enabled": True, "cert": "/custom/cert.pem", "key": "/custom/key.pem"},
                    "future_api": 1,
                },
                "system": {"data": "/var/lib/pterodactyl/volumes"},
                "docker": {"network": {"dns": ["9.9.9.9", "8.8.8.8"]}},
                "allowed_mounts": ["/mnt/keep"],
                "allowed_origins": ["https://a.example", "https://b.example"],
                "remote": "https://panel.example.com",
                "future_top": {"x": 1},
            }
        )

    def test_full_panel_body(self) -> None:
        """
        The Panel's body is applied key by key (custom TLS paths included).
        """
        c = apply_panel_update(self.current(), PANEL_UPDATE)
        self.assertEqual(c.debug, True)
        self.assertEqual(c.uuid, "11111111-2222-4333-8444-555555555555")
        self.assertEqual(c.token_id, "NewTokenId000001")
        self.assertEqual(c.token, "n" * 64)
        self.assertEqual((c.api.host, c.api.port, c.api.upload_limit), ("10.0.0.5", 8443, 250))
        self.assertEqual(c.api.ssl.enabled, True)
        self.assertEqual(c.api.ssl.cert, "/srv/certs/node.pem")
        self.assertEqual(c.api.ssl.key, "/srv/certs/node.key")
        self.assertEqual(c.system.data, "/srv/volumes")
        self.assertEqual(c.system.sftp.bind_port, 2222)
        self.assertEqual(c.remote, "https://panel.example.org")

    def test_absent_keys_kept(self) -> None:
        """
        Keys absent from the body keep their current values.
        """
        c = apply_panel_update(self.current(), {"api": {"host": "1.2.3.4"}})
        self.assertEqual(c.api.host, "1.2.3.4")
        self.assertEqual(c.api.port, 8080)
        self.assertEqual(c.api.ssl.cert, "/custom/cert.pem")
        self.assertEqual(c.token, "o" * 64)
        self.assertEqual(c.remote, "https://panel.example.com")

    def test_nested_objects_merge(self) -> None:
        """
        A nested object changes only the keys it carries.
        """
        c = apply_panel_update(self.current(), {"api": {"ssl": {"enabled": False}}})
        self.assertEqual(c.api.ssl.enabled, False)
        self.assertEqual(c.api.ssl.cert, "/custom/cert.pem")

    def test_arrays_replace(self) -> None:
        """
        Arrays replace the current list wholesale.
        """
        c = apply_panel_update(
            self.current(),
            {
                "allowed_origins": ["https://c.example"],
                "docker": {"network": {"dns": ["1.1.1.1"]}},
            },
        )
        self.assertEqual(c.allowed_origins, ("https://c.example",))
        self.assertEqual(c.docker.network.dns, ("1.1.1.1",))

    def test_allowed_mounts_ignored(self) -> None:
        """
        C{allowed_mounts} can only be changed in the file.
        """
        c = apply_panel_update(self.current(), {"allowed_mounts": ["/etc"]})
        self.assertEqual(c.allowed_mounts, ("/mnt/keep",))
        c = apply_panel_update(self.current(), {"allowed_mounts": None})
        self.assertEqual(c.allowed_mounts, ("/mnt/keep",))

    def test_lets_encrypt_rule(self) -> None:
        """
        A Let's Encrypt key path from the Panel keeps the current cert and key.
        """
        c = apply_panel_update(
            self.current(),
            {
                "api": {
                    "ssl": {
                        "enabled": True,
                        "cert": "/etc/letsencrypt/live/node.example.com/fullchain.pem",
                        "key": "/etc/letsencrypt/live/node.example.com/privkey.pem",
                    }
                }
            },
        )
        self.assertEqual((c.api.ssl.cert, c.api.ssl.key), ("/custom/cert.pem", "/custom/key.pem"))

    def test_lets_encrypt_rule_keeps_empty_paths(self) -> None:
        """
        The rule keeps the current values even when they are empty.
        """
        c = apply_panel_update(
            minimal(),
            {"api": {"ssl": {"cert": "/etc/letsencrypt/live/n/fullchain.pem",
                             "key": "/etc/letsencrypt/live/n/privkey.pem"}}},
        )
        self.assertEqual((c.api.ssl.cert, c.api.ssl.key), ("", ""))

    def test_unknown_keys_ignored(self) -> None:
        """
        Unknown body keys are ignored and never reach the file.
        """
        c = apply_panel_update(
            self.current(), {"injected": 1, "api": {"injected": 2}, "Debug": True}
        )
        self.assertEqual(c, self.current())
        tree = yaml.safe_load(dump_config(c))
        self.assertNotIn("injected", tree)
        self.assertNotIn("injected", tree["api"])
        self.assertNotIn("Debug", tree)

    def test_file_unknown_keys_survive(self) -> None:
        """
        Unknown keys of the original file survive an update and the rewrite.
        """
        c = apply_panel_update(self.current(), PANEL_UPDATE)
        self.assertEqual(c.raw["future_top"], {"x": 1})
        tree = yaml.safe_load(dump_config(c))
        self.assertEqual(tree["future_top"], {"x": 1})
        self.assertEqual(tree["api"]["future_api"], 1)
        self.assertEqual(tree["token"], "n" * 64)
        self.assertEqual(tree["api"]["port"], 8443)

    def test_null_keeps_value(self) -> None:
        """
        A JSON null leaves a scalar or a section unchanged.
        """
        c = apply_panel_update(self.current(), {"remote": None, "api": None, "token": None})
        self.assertEqual(c, self.current())

    def test_not_an_object(self) -> None:
        """
        A body that is not a JSON object is refused.
        """
        for body in ([], "x", 1, None):
            e = self.assertRaises(UpdateError, apply_panel_update, self.current(), body)
            self.assertTrue(str(e).startswith("the request body must be a JSON object"))

    def test_type_errors(self) -> None:
        """
        A wrongly typed value is an C{UpdateError} naming the dotted key.
        """
        e = self.assertRaises(
            UpdateError, apply_panel_update, self.current(), {"api": {"port": "8080"}}
        )
        self.assertEqual(str(e), "api.port: expected an integer, got '8080'")
        self.assertIsInstance(e, ConfigError)
        e = self.assertRaises(UpdateError, apply_panel_update, self.current(), {"uuid": 5})
        self.assertEqual(str(e), "uuid: expected a string, got 5")
        e = self.assertRaises(UpdateError, apply_panel_update, self.current(), {"system": []})
        self.assertEqual(str(e), "system: expected a mapping, got a list")

    def test_empty_token_refused(self) -> None:
        """
        An update cannot empty the node token.
        """
        e = self.assertRaises(UpdateError, apply_panel_update, self.current(), {"token": ""})
        self.assertEqual(e.key, "token")

    def test_indirection_refused(self) -> None:
        """
        The Panel cannot install a C{$VAR} or C{file://} token.
        """
        for value in ("file:///etc/shadow", "${HOME}"):
            e = self.assertRaises(
                UpdateError, apply_panel_update, self.current(), {"token": value}
            )
            self.assertEqual(e.key, "token")

    def test_original_unchanged(self) -> None:
        """
        The update returns a new config and leaves the old one alone.
        """
        old = self.current()
        new = apply_panel_update(old, {"api": {"port": 1}})
        self.assertEqual(old.api.port, 8080)
        self.assertEqual(new.api.port, 1)

    def test_caller_checks_ignore_flag(self) -> None:
        """
        C{ignore_panel_config_updates} is the caller's concern: it does not
        stop the merge here, and the Panel can't change it either way.
        """
        c = minimal(ignore_panel_config_updates=True)
        self.assertEqual(apply_panel_update(c, {"uuid": "u"}).uuid, "u")

    def test_unchanged_token_keeps_file_reference(self) -> None:
        """
        When the Panel resends the current token, the file keeps its reference.
        """
        c = config_from_dict({"token": "${T}"}, environ={"T": "resolved"})
        updated = apply_panel_update(c, {"token": "resolved", "uuid": "u"})
        self.assertEqual(yaml.safe_load(dump_config(updated))["token"], "${T}")
        rotated = apply_panel_update(c, {"token": "rotated"})
        self.assertEqual(yaml.safe_load(dump_config(rotated))["token"], "rotated")


class SampleFileTests(_FileMixin, SynchronousTestCase):
    """
    The shipped example and a Panel-generated file load.
    """

    def test_example_config(self) -> None:
        """
        C{conf/config.example.yml} loads with the development values.
        """
        c = load_config(EXAMPLE.path, environ={}, cwd="/repo")
        self.assertEqual(c.token_id, "devTokenId000001")
        self.assertEqual(
            c.token, "devSecretTokenForWingsTwistedLocalDevelopmentOnly0123456789abcde"
        )
        self.assertEqual((c.api.host, c.api.port), ("127.0.0.1", 8080))
        self.assertEqual(c.remote, "http://127.0.0.1:8081")
        self.assertEqual(c.environment.driver, "process")
        self.assertEqual(c.system.root_directory, "/repo/var/lib")
        self.assertEqual(c.system.log_directory, "/repo/var/log")
        self.assertEqual(c.system.data, "/repo/var/volumes")
        self.assertEqual(c.system.archive_directory, "/repo/var/archives")
        self.assertEqual(c.system.backup_directory, "/repo/var/backups")
        self.assertEqual(c.system.tmp_directory, "/repo/var/tmp")
        self.assertIsNone(c.system.user.uid)
        self.assertIsNone(c.system.user.gid)
        self.assertEqual(c.docker.log_config.config["max-size"], "5m")
        self.assertEqual(c.search.max_recursion_depth, 8)

    def test_example_has_every_section(self) -> None:
        """
        Every top-level section is present in the example.
        """
        tree = yaml.safe_load(EXAMPLE.getContent())
        for key in (
            "debug", "app_name", "uuid", "token_id", "token", "api", "system", "docker",
            "throttles", "remote", "remote_query", "allowed_mounts", "allowed_origins",
            "allow_cors_private_network", "ignore_panel_config_updates", "environment",
            "tokens", "websocket", "Search", "ChunkedUpload", "PartialEdit",
        ):
            self.assertIn(key, tree)

    def test_panel_generated_file(self) -> None:
        """
        The file generated by the Panel (config.md §6.1) loads.
        """
        c = self.load(PANEL_GENERATED)
        self.assertEqual(c.uuid, "9a8e7c1c-3b71-4c55-a3f5-0f5e77a2c001")
        self.assertEqual(c.token_id, "Q2hhbmdlTWVQbGVh")
        self.assertEqual(len(c.token), 64)
        self.assertEqual(c.api.ssl.enabled, True)
        self.assertEqual(c.api.ssl.key, "/etc/letsencrypt/live/node.example.com/privkey.pem")
        self.assertEqual(c.system.data, "/var/lib/pterodactyl/volumes")
        self.assertEqual(c.system.sftp.bind_port, 2022)
        self.assertEqual(c.remote_base, "https://panel.example.com")
        self.assertEqual(c.docker.network.name, "pterodactyl_nw")

    def test_panel_generated_round_trip(self) -> None:
        """
        The Panel's file survives a rewrite.
        """
        c = self.load(PANEL_GENERATED)
        self.assertEqual(self.load(dump_config(c)), c)
