"""
Command line of the development Panel.

``python -m wings_twisted.devpanel serve [--config conf/devpanel.yml] [--listen tcp:8081:interface=127.0.0.1]``
    Serve the Panel's remote API until interrupted; logs go to stdout.  The
    default listen address is the host and port of ``node.url``.

``python -m wings_twisted.devpanel sign KIND --server UUID [options]``
    Print one ready-to-use value signed like the Panel would:

    * ``download-file --path /x``: ``<daemon>/download/file?token=…``
    * ``download-backup --backup B``: ``<daemon>/download/backup?token=…``
    * ``upload [--directory D]``: ``<daemon>/upload/file?token=…[&directory=D]``
    * ``websocket [--permissions '*']``: the bare token
    * ``transfer``: the bare token (send it as ``Authorization: Bearer <token>``)

    Options: ``--user UUID-or-username``, ``--scope [SCOPE]``, ``--expired``,
    ``--lifetime SECONDS``, ``--any-server`` (allow a UUID the file does not
    list).

``python -m wings_twisted.devpanel transfer --server UUID --to NODE [--allocation IP:PORT] [--panel URL]``
    Ask the running Panel (``node.url`` of the fixture file unless
    ``--panel``) to transfer a server to another of its nodes, as the Panel's
    admin page does (``transfers.py``); prints the Panel's answer.

``python -m wings_twisted.devpanel backup ACTION --server UUID [options]``
    Drive backups through the running development Panel (``serve``), as the
    Panel's backup page does (``backups.py``); prints the Panel's JSON answer:

    * ``list``; ``create [--ignore 'logs/\n*.tmp']``;
    * ``download --backup B`` (a signed daemon URL, or a presigned S3 GET);
    * ``restore --backup B [--truncate]``; ``delete --backup B``.

Bad input ends with exit status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, Sequence
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import react
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from .resource import listen
from .servers import StateError
from .state import DevPanelState
from .tokens import KINDS, mint_transfer, mint_websocket, signed_url

log = Logger()

DEFAULT_CONFIG = "conf/devpanel.yml"


class UsageError(Exception):
    """
    Bad command-line input; the message is the one line shown.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """
    The ``serve``/``sign`` argument parser.
    """
    parser = _Parser(prog="python -m wings_twisted.devpanel", description="Development Panel for wings-twisted.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve the Panel's remote API")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="fixture file (default: %(default)s)")
    serve.add_argument("--listen", default=None, help="endpoint description (default: from node.url)")
    sign = commands.add_parser("sign", help="print a signed URL or token")
    sign.add_argument("kind", choices=KINDS)
    sign.add_argument("--config", default=DEFAULT_CONFIG, help="fixture file (default: %(default)s)")
    sign.add_argument("--server", required=True, help="server UUID")
    sign.add_argument("--path", help="file path (download-file)")
    sign.add_argument("--backup", help="backup UUID (download-backup)")
    sign.add_argument("--directory", help="upload directory, appended as &directory=")
    sign.add_argument("--permissions", help="websocket permissions, comma or space separated")
    sign.add_argument("--user", help="user UUID or username (default: the server's owner)")
    sign.add_argument("--scope", nargs="?", const=True, default=None, help="add a scope claim")
    sign.add_argument("--expired", action="store_true", help="mint an already expired token")
    sign.add_argument("--lifetime", type=int, help="seconds between iat and exp")
    sign.add_argument("--any-server", action="store_true", help="allow a server UUID not in the file")
    transfer = commands.add_parser("transfer", help="transfer a server to another node")
    transfer.add_argument("--config", default=DEFAULT_CONFIG, help="fixture file (default: %(default)s)")
    transfer.add_argument("--server", required=True, help="server UUID")
    transfer.add_argument("--to", required=True, help="name of the destination node")
    transfer.add_argument("--allocation", help="the server's new allocation, IP:PORT")
    transfer.add_argument("--panel", help="URL of the running Panel (default: node.url)")
    backup = commands.add_parser("backup", help="create, list, download, restore or delete backups")
    backup.add_argument("action", choices=("list", "create", "download", "restore", "delete"))
    backup.add_argument("--config", default=DEFAULT_CONFIG, help="fixture file (default: %(default)s)")
    backup.add_argument("--server", required=True, help="server UUID (or its first 8 characters)")
    backup.add_argument("--backup", help="backup UUID (download, restore, delete)")
    backup.add_argument("--ignore", default="", help="ignored lines, separated by \\n (create)")
    backup.add_argument("--truncate", action="store_true", help="delete all files first (restore)")
    return parser


def load_state(path: str) -> DevPanelState:
    """
    Load the fixture file, turning every problem into a ``UsageError``.
    """
    try:
        return DevPanelState.from_yaml(path)
    except (StateError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def sign_output(args: argparse.Namespace, state: DevPanelState) -> str:
    """
    The line ``sign`` prints for parsed ``args``.
    """
    if args.server not in state.servers and not args.any_server:
        raise UsageError("server {} is not in {} (use --any-server to sign anyway)".format(args.server, args.config))
    knobs: dict[str, Any] = {"expired": args.expired, "lifetime": args.lifetime, "scope": args.scope}
    try:
        if args.kind == "transfer":
            return mint_transfer(state, args.server, **knobs)
        if args.kind == "websocket":
            permissions = None
            if args.permissions is not None:
                permissions = [p for p in args.permissions.replace(",", " ").split() if p]
            return mint_websocket(state, args.server, user=args.user, permissions=permissions, **knobs)
        if args.kind == "download-file" and not args.path:
            raise UsageError("sign download-file needs --path")
        if args.kind == "download-backup" and not args.backup:
            raise UsageError("sign download-backup needs --backup")
        return signed_url(
            args.kind,
            state,
            args.server,
            path=args.path,
            backup_uuid=args.backup,
            directory=args.directory,
            user=args.user,
            **knobs,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


def request_transfer(args: argparse.Namespace, state: DevPanelState) -> int:
    """
    ``transfer``: ``POST <panel>/admin/servers/<uuid>/transfer``; 0 when the Panel accepted.
    """
    import json
    import urllib.error
    import urllib.request

    panel = (args.panel or state.node.url).rstrip("/")
    body = {"node": args.to}
    if args.allocation:
        body["allocation"] = args.allocation
    request = urllib.request.Request(
        "{}/admin/servers/{}/transfer".format(panel, args.server), method="POST",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as e:
        print("devpanel: the Panel answered {}: {}".format(
            e.code, e.read().decode("utf-8", "replace")), file=sys.stderr)
    except OSError as e:
        raise UsageError("cannot reach the Panel at {}: {}".format(panel, e)) from None
    return 1


def backup_output(args: argparse.Namespace, state: DevPanelState) -> str:
    """
    Call the running Panel's client API for ``backup ACTION`` (``backups.py``); its answer.
    """
    import json
    import urllib.error
    import urllib.request

    if args.action in ("download", "restore", "delete") and not args.backup:
        raise UsageError("backup {} needs --backup".format(args.action))
    base = "{}/api/client/servers/{}/backups".format(state.node.url, args.server)
    method, path, body = {
        "list": ("GET", "", None),
        "create": ("POST", "", {"ignored": args.ignore.replace("\\n", "\n")}),
        "download": ("GET", "/{}/download".format(args.backup), None),
        "restore": ("POST", "/{}/restore".format(args.backup), {"truncate": args.truncate}),
        "delete": ("DELETE", "/{}".format(args.backup), None),
    }[args.action]
    key = state.application.api_keys[0].key if state.application.api_keys else ""
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json",
                 "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read().decode("utf-8", "replace")
            return answer or "{} {}".format(response.status, response.reason)
    except urllib.error.HTTPError as e:
        raise UsageError("the panel answered {}: {}".format(
            e.code, e.read().decode("utf-8", "replace"))) from None
    except OSError as e:
        raise UsageError("cannot reach the panel at {} (is `serve` running?): {}".format(
            state.node.url, e)) from None


def listen_description(state: DevPanelState) -> str:
    """
    ``tcp:<port>:interface=<host>`` from the Panel URL in the fixture file.
    """
    parts = urlsplit(state.node.url)
    if parts.scheme != "http" or parts.hostname is None:
        raise UsageError("node.url must be an http:// URL to derive --listen, got {!r}".format(state.node.url))
    return "tcp:{}:interface={}".format(parts.port or 80, parts.hostname)


async def _serve(reactor: Any, state: DevPanelState, description: str) -> None:
    try:
        running = await listen(state, reactor, description, set_url=False)
    except CannotListenError as e:
        log.error("devpanel: cannot listen on {description}: {error}", description=description, error=e.socketError)
        raise SystemExit(1)
    log.info(
        "devpanel: Panel {url} for daemon {daemon} (token id {token_id}); {count} server(s), listening at {bound}",
        url=state.node.url,
        daemon=state.node.daemon_url,
        token_id=state.node.token_id,
        count=len(state.servers),
        bound=running.url,
    )
    await Deferred()  # until the reactor is stopped (Ctrl-C, SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; returns the exit status (``serve`` does not
    return: ``react`` exits the process).
    """
    try:
        args = build_parser().parse_args(argv)
        state = load_state(args.config)
        if args.command == "sign":
            print(sign_output(args, state))
            return 0
        if args.command == "transfer":
            return request_transfer(args, state)
        if args.command == "backup":
            print(backup_output(args, state))
            return 0
        description = args.listen or listen_description(state)
    except UsageError as e:
        print("devpanel: error: {}".format(e), file=sys.stderr)
        return 2

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    react(lambda reactor: Deferred.fromCoroutine(_serve(reactor, state, description)))


if __name__ == "__main__":
    sys.exit(main())
