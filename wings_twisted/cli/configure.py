"""
``wings configure``: the Panel's "Auto-Deploy" command (config.md §6.1,
panel.md §7).

``GET <panel url>/api/application/nodes/<node>/configuration`` with
``Authorization: Bearer <key>``, ``Accept:
application/vnd.pterodactyl.v1+json`` and a 30-second timeout, as upstream's
``cmd/configure.go`` does.  The JSON answer (``Node::getConfiguration()``) is
laid over a configuration of defaults, without ``allowed_mounts`` (upstream
never decodes it from JSON), and the complete file is written atomically
with mode 0600, creating its directory when missing.

Answers, as upstream words them: 401/403 → ``The authentication
credentials provided were not valid.``; any other non-200 → ``An error
occurred while processing this request`` with the status and the start of
the body; a transport failure → ``Failed to fetch configuration from the
panel`` with the reason.  An existing file is only replaced with
``--override`` (upstream asks interactively).  Unlike upstream, the request
headers (which hold the key) are never printed.

Synchronous on purpose: a one-shot command with nothing to multiplex.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import urllib.error
import urllib.request
from typing import IO, Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from ..config import Config, ConfigError, config_from_dict, write_config
from . import CommandError

TIMEOUT = 30.0
_NODE_ID = re.compile(r"^\d+$")

#: ``urlopen``-shaped: (request, timeout, ssl context) -> response.
Opener = Callable[[urllib.request.Request, float, ssl.SSLContext | None], Any]


def configuration_url(panel_url: str, node: str) -> str:
    """
    The application API address of node ``node`` below ``panel_url`` (a
    Panel served under a path keeps it).
    """
    parts = urlsplit(panel_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CommandError("--panel-url must be the Panel's http:// or https:// URL, got {!r}"
                           .format(panel_url))
    if not _NODE_ID.match(node):
        raise CommandError("--node must be the node's numeric id, got {!r}".format(node))
    path = parts.path.rstrip("/") + "/api/application/nodes/{}/configuration".format(node)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _urlopen(request: urllib.request.Request, timeout: float,
             context: ssl.SSLContext | None) -> Any:
    return urllib.request.urlopen(request, timeout=timeout, context=context)  # noqa: S310


def fetch(url: str, key: str, *, insecure: bool = False, opener: Opener = _urlopen) -> bytes:
    """
    The body of a 200 answer to the configuration request.

    :raises CommandError: any other outcome, worded as upstream.
    """
    request = urllib.request.Request(url, headers={
        "Accept": "application/vnd.pterodactyl.v1+json",
        "Content-Type": "application/json",
        "Authorization": "Bearer {}".format(key),
    })
    context = None
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with opener(request, TIMEOUT, context) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise CommandError("Failed to fetch configuration from the panel at {}: {}".format(
            url, reason)) from None
    if status in (401, 403):
        raise CommandError("The authentication credentials provided were not valid.")
    if status != 200:
        text = " ".join(body.decode("utf-8", "replace").split())
        if len(text) > 300:
            text = text[:297] + "..."
        raise CommandError("An error occurred while processing this request (HTTP {}): {}"
                           .format(status, text))
    return bytes(body)


def configuration_from(body: bytes) -> Config:
    """
    The configuration to write for the Panel's answer ``body``.

    :raises CommandError: the answer is not a usable configuration.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise CommandError("The Panel's answer is not JSON.") from None
    if not isinstance(data, Mapping):
        raise CommandError("The Panel's answer is not a JSON object.")
    generated = {key: value for key, value in data.items() if key != "allowed_mounts"}
    try:
        return config_from_dict(generated, source="the Panel's configuration")
    except ConfigError as e:
        raise CommandError(str(e)) from None


def configure(args: argparse.Namespace, out: IO[str], *, opener: Opener = _urlopen) -> int:
    """
    Run ``wings configure`` with parsed ``args``; returns the exit status.

    :raises CommandError: one line for the operator.
    """
    path = os.path.abspath(args.config)
    if os.path.isdir(path):
        raise CommandError("{} is a directory; --config-path names the file to write".format(
            path))
    if os.path.exists(path) and not args.override:
        raise CommandError("Aborting process; a configuration file already exists for this "
                           "node ({}). Pass --override to replace it.".format(path))
    url = configuration_url(args.panel_url, args.node)
    config = configuration_from(fetch(url, args.token, insecure=args.allow_insecure,
                                      opener=opener))
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        write_config(config, path)
    except OSError as e:
        raise CommandError("cannot write {}: {}".format(path, e.strerror or e)) from None
    print("Successfully configured wings.", file=out)
    print("Configuration written to {}.".format(path), file=out)
    return 0
