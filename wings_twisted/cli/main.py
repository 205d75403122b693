"""
``wings``: the argument parser and the dispatch to the daemon and the verbs
(see the package docstring for the commands and their flags).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, NoReturn, Sequence

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH
from . import CommandError


class _UsageError(Exception):
    """
    Bad command-line input, exit status 2.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _add_config(parser: argparse.ArgumentParser, *names: str) -> None:
    # SUPPRESS: a subcommand's --config only overrides when given.
    parser.add_argument(*names, dest="config", default=argparse.SUPPRESS, metavar="PATH",
                        help="configuration file (default: {})".format(DEFAULT_CONFIG_PATH))


def build_parser() -> argparse.ArgumentParser:
    """
    The ``wings`` argument parser.
    """
    parser = _Parser(prog="wings", description="The Pterodactyl node daemon (wings-twisted).")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="PATH",
                        help="configuration file (default: %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging and access log (not written to the file)")
    parser.add_argument("--ignore-certificate-errors", action="store_true",
                        help="do not verify TLS certificates of outgoing requests")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--listen", metavar="DESCRIPTION",
                        help="API listener as a strports description (e.g. tcp:0)")
    parser.add_argument("--auto-tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls-hostname", help=argparse.SUPPRESS)
    parser.add_argument("--pprof", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pprof-port", help=argparse.SUPPRESS)
    parser.add_argument("--pprof-block-rate", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("version", help="print the version and exit")

    configure = commands.add_parser(
        "configure", help="fetch this node's configuration from the Panel and write it")
    configure.add_argument("-p", "--panel-url", required=True, help="the Panel's base URL")
    configure.add_argument("-t", "--token", required=True,
                           help="an application API key that may read nodes")
    configure.add_argument("-n", "--node", required=True, help="the node's numeric id")
    _add_config(configure, "-c", "--config-path", "--config")
    configure.add_argument("--override", action="store_true",
                           help="replace an existing configuration file")
    configure.add_argument("--allow-insecure", action="store_true",
                           help="do not verify the Panel's TLS certificate")

    diagnostics = commands.add_parser(
        "diagnostics", help="collect a report for support (secrets redacted)")
    _add_config(diagnostics, "--config")
    diagnostics.add_argument("-o", "--output", metavar="FILE",
                             help="write the report here (mode 0600) instead of standard output")
    diagnostics.add_argument("--log-lines", type=int, default=200, metavar="N",
                             help="recent lines of wings.log to include (default: %(default)s)")
    diagnostics.add_argument("--include-endpoints", action="store_true",
                             help="keep the Panel URL, addresses and certificate paths")
    diagnostics.add_argument("--no-logs", action="store_true", help="leave the log lines out")
    diagnostics.add_argument("--hastebin-url", metavar="URL",
                             help="also upload the report to this hastebin server")
    return parser


def version_line() -> str:
    """
    What ``wings --version`` prints.
    """
    return "wings-twisted {}".format(__version__)


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    """
    Run the command; returns the exit status.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        print("wings: {}".format(e), file=err)
        return 2
    try:
        if args.version or args.command == "version":
            print(version_line(), file=out)
            return 0
        if args.command == "configure":
            from .configure import configure
            return configure(args, out)
        if args.command == "diagnostics":
            from .diagnostics import diagnostics
            return diagnostics(args, out)
        if args.auto_tls:
            raise CommandError("--auto-tls is not supported: put the node's certificate and key "
                               "in api.ssl (for example from certbot)")
        from .daemon import run_daemon
        return run_daemon(args)
    except CommandError as e:
        print("wings: {}".format(e), file=err)
        return 1
