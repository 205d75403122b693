"""
``wings diagnostics``: what a support channel asks for, in one text report
(upstream's ``cmd/diagnostics.go``, without its prompts and without
uploading anywhere unless asked).

Sections: versions (wings-twisted, Python, Twisted, kernel, OS); the
configuration summary upstream prints; the environment driver and its
health (process: the cgroup hierarchies and install sandboxes found;
docker: the engine's version from ``DOCKER_HOST``); the servers recorded in
``states.json``; the whole configuration as the daemon reads it; the last
``--log-lines`` lines of ``wings.log``.

Redaction: every value under a key naming a token, password or secret, the
node credentials, registry credentials and ``remote_query.custom_headers``
values are replaced by ``{redacted}`` in the configuration, and then every
occurrence of those values anywhere in the report (log lines included).
Unless ``--include-endpoints``, the Panel URL, listen addresses and
certificate paths are redacted the same way, as upstream does.

The report goes to standard output or ``--output`` (mode 0600); with
``--hastebin-url`` it is also posted to ``<url>/documents`` and the link
printed.  Nothing here starts the reactor or changes the machine.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import socket
import urllib.request
from typing import IO, Any, Mapping

import yaml
from twisted import __version__ as twisted_version

from .. import __version__
from ..config import Config, ConfigError, dump_config, load_config
from ..environment.cgroups import parse_mountinfo
from ..environment.docker import DockerError, parse_docker_host
from ..environment.sandbox import candidates
from ..logs import LOG_NAME, tail
from . import CommandError

REDACTED = "{redacted}"
_SECRET_WORDS = ("token", "password", "secret")


def _header(title: str) -> list[str]:
    return ["", "|", "| " + title, "| ------------------------------"]


def _row(label: str, value: object) -> str:
    return "{:>20}: {}".format(label, value)


def os_name(os_release: str = "/etc/os-release") -> str:
    """
    ``PRETTY_NAME`` of os-release(5), or ``unknown``.
    """
    try:
        with open(os_release, encoding="utf-8") as f:
            for line in f:
                name, _, value = line.strip().partition("=")
                if name == "PRETTY_NAME":
                    return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def cgroup_summary(mountinfo: str = "/proc/self/mountinfo") -> str:
    """
    The cgroup hierarchies mounted here (read only: nothing is created).
    """
    try:
        with open(mountinfo, encoding="utf-8") as f:
            mounts = parse_mountinfo(f.read())
    except OSError as e:
        return "cannot read {}: {}".format(mountinfo, e.strerror or e)
    found = []
    for mount in mounts:
        if mount.fstype == "cgroup2":
            found.append("v2 at {}".format(mount.mount_point))
        elif mount.fstype == "cgroup":
            found.append("v1 at {}".format(mount.mount_point))
    return ", ".join(found) or "none (the memory watchdog limits servers)"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def docker_summary(environ: Mapping[str, str], timeout: float = 5.0) -> str:
    """
    ``Docker <version> (API <version>) at <host>``, or why not.
    """
    try:
        host = parse_docker_host(environ.get("DOCKER_HOST", ""))
    except DockerError as e:
        return "unusable: {}".format(e)
    connection = (_UnixConnection(host.path, timeout) if host.path
                  else http.client.HTTPConnection(host.host, host.port, timeout=timeout))
    try:
        connection.request("GET", "/version")
        answer = connection.getresponse()
        body = json.loads(answer.read())
        if answer.status != 200 or not isinstance(body, dict):
            return "{} answered HTTP {}".format(host.url, answer.status)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return "unreachable at {}: {}".format(host.url, e)
    finally:
        connection.close()
    return "Docker {} (API {}) at {}".format(body.get("Version"), body.get("ApiVersion"),
                                             host.url)


def secrets_of(config: Config) -> list[str]:
    """
    Every secret value the configuration holds (resolved and as written).
    """
    values = [config.token, config.token_id]
    # As written in the file too (a ${VAR} or file:// reference).
    written = (config.raw.get("token"), config.raw.get("token_id"))
    values += [v for v in written if isinstance(v, str)]
    values += [registry.password for registry in config.docker.registries.values()]
    values += list(config.remote_query.custom_headers.values())
    return [v for v in values if v]


def endpoints_of(config: Config) -> list[str]:
    """
    The addresses upstream redacts unless asked to include them.
    """
    values = [config.remote, config.remote_base, config.api.host, config.api.ssl.cert,
              config.api.ssl.key, config.system.sftp.bind_address]
    return [v for v in values if len(v) >= 4]


def _redact_tree(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if key == "custom_headers":
            return {k: REDACTED for k in value}
        if key == "registries":
            return {k: {field: REDACTED for field in v} if isinstance(v, dict) else REDACTED
                    for k, v in value.items()}
        return {k: _redact_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, key) for v in value]
    if any(word in key.lower() for word in _SECRET_WORDS):
        return REDACTED
    return value


def redact(text: str, values: list[str]) -> str:
    """
    ``text`` with every occurrence of ``values`` (longest first) replaced.
    """
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _summary(config: Config) -> list[str]:
    api, system = config.api, config.system
    return [
        _row("Panel Location", config.remote),
        "",
        _row("Internal Webserver", "{}:{}".format(api.host, api.port)),
        _row("SSL Enabled", api.ssl.enabled),
        _row("SSL Certificate", api.ssl.cert),
        _row("SSL Key", api.ssl.key),
        "",
        _row("SFTP Server", "{}:{}".format(system.sftp.bind_address, system.sftp.bind_port)),
        _row("SFTP Read-Only", system.sftp.read_only),
        "",
        _row("Root Directory", system.root_directory),
        _row("Logs Directory", system.log_directory),
        _row("Data Directory", system.data),
        _row("Archive Directory", system.archive_directory),
        _row("Backup Directory", system.backup_directory),
        "",
        _row("Username", system.username),
        _row("Server Time", datetime.datetime.now().astimezone().strftime(
            "%a, %d %b %Y %H:%M:%S %z")),
        _row("Debug Mode", config.debug),
    ]


def _environment(config: Config, environ: Mapping[str, str]) -> list[str]:
    driver = config.environment.driver
    lines = [_row("Driver", driver)]
    if driver == "docker":
        lines.append(_row("Engine", docker_summary(environ)))
    else:
        lines.append(_row("Cgroups", cgroup_summary()))
        found = candidates(shutil.which, os.geteuid() == 0)
        sandboxes = ", ".join("{} ({})".format(s.kind, s.path) for s in found)
        lines.append(_row("Install sandbox", sandboxes or "none found (bwrap recommended)"))
    return lines


def _servers(config: Config) -> list[str]:
    path = os.path.join(config.system.root_directory, "states.json")
    try:
        with open(path, encoding="utf-8") as f:
            states = json.load(f)
    except FileNotFoundError:
        return ["no states.json yet"]
    except (OSError, ValueError) as e:
        return ["cannot read {}: {}".format(path, e)]
    if not isinstance(states, dict) or not states:
        return ["states.json lists no server"]
    return [_row(str(uuid), state) for uuid, state in sorted(states.items())]


def report(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """
    The redacted report for parsed ``args``.
    """
    lines = ["Pterodactyl Wings - Diagnostics Report (wings-twisted)"]
    lines += _header("Versions")
    lines += [_row("wings-twisted", __version__), _row("Python", platform.python_version()),
              _row("Twisted", twisted_version), _row("Kernel", platform.release()),
              _row("OS", os_name())]
    path = os.path.abspath(args.config)
    lines += _header("Wings Configuration")
    try:
        config: Config | None = load_config(path, environ=environ)
    except ConfigError as e:
        config = None
        lines.append("Failed to load configuration: {}".format(e))
    log_directory = "/var/log/pterodactyl"
    hidden: list[str] = []
    if config is not None:
        log_directory = config.system.log_directory
        hidden = secrets_of(config) + ([] if args.include_endpoints else endpoints_of(config))
        lines.append(_row("Configuration File", path))
        lines += _summary(config)
        lines += _header("Environment")
        lines += _environment(config, environ)
        lines += _header("Servers (states.json)")
        lines += _servers(config)
        lines += _header("Configuration (secrets redacted)")
        tree = _redact_tree(yaml.safe_load(dump_config(config)))
        lines += yaml.safe_dump(tree, sort_keys=False, default_flow_style=False).splitlines()
    lines += _header("Latest Wings Logs")
    if args.no_logs:
        lines.append("Logs redacted.")
    else:
        recent = tail(os.path.join(log_directory, LOG_NAME), args.log_lines)
        lines += recent or ["No logs found."]
    return redact("\n".join(lines) + "\n", hidden)


def upload(text: str, url: str) -> str:
    """
    Post ``text`` to a hastebin server; the link to the document.
    """
    request = urllib.request.Request(url.rstrip("/") + "/documents", data=text.encode(),
                                     headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            key = json.loads(answer.read()).get("key")
    except (OSError, ValueError, AttributeError) as e:
        raise CommandError("Failed to upload the report to {}: {}".format(url, e)) from None
    if not isinstance(key, str):
        raise CommandError("Failed to upload the report to {}: no key in the answer".format(url))
    return url.rstrip("/") + "/" + key


def diagnostics(args: argparse.Namespace, out: IO[str],
                environ: Mapping[str, str] | None = None) -> int:
    """
    Run ``wings diagnostics``; returns the exit status.
    """
    text = report(args, os.environ if environ is None else environ)
    if args.output:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise CommandError("cannot write {}: {}".format(args.output, e.strerror or e))
        print("Report written to {}.".format(args.output), file=out)
    else:
        out.write(text)
    if args.hastebin_url:
        print("Your report is available here: {}".format(upload(text, args.hastebin_url)),
              file=out)
    return 0
