"""
``wings``: the daemon in the foreground, as ``twistd -n wings`` runs it.

The service is built by ``tap.daemon_service`` (configuration, boot checks,
``wings.log``), then started the way twistd starts an application:
``privilegedStartService`` (binding the listener), ``startService``, and
``stopService`` before the reactor shuts down (SIGTERM, SIGINT).  The
console gets the same filtered text as ``wings.log``, on standard output.
No pid file and no forking: systemd supervises the process.

Exit status: 0 after a normal stop, 1 when start-up or boot fails (one
line on standard error for what stops start-up, one critical log line for
a Panel that cannot be reached).
"""

from __future__ import annotations

import argparse
import sys
from typing import cast

from twisted.logger import globalLogBeginner

from .. import tap
from ..logs import text_observer
from ..reactor import IReactor


def tap_arguments(args: argparse.Namespace) -> list[str]:
    """
    The ``twistd wings`` options equivalent to the parsed ``wings`` flags.
    """
    argv = ["--config", args.config]
    if args.debug:
        argv.append("--debug")
    if args.ignore_certificate_errors:
        argv.append("--ignore-certificate-errors")
    if args.listen:
        argv += ["--listen", args.listen]
    return argv


def run_daemon(args: argparse.Namespace) -> int:
    """
    Run until stopped; returns the exit status (a failed boot leaves with
    status 1 from the reactor's shutdown, see ``tap.build_service``).
    """
    from twisted.internet import reactor as global_reactor

    reactor = cast(IReactor, global_reactor)
    options = tap.Options()
    options.parseOptions(tap_arguments(args))
    service, debug = tap.daemon_service(options, reactor)
    globalLogBeginner.beginLoggingTo([text_observer(sys.stdout, debug)],
                                     redirectStandardIO=False)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
