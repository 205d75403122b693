"""
Crash handling (lifecycle.md §11): what the runtime starts on the next
reactor turn when a server drops from ``starting``/``running`` straight to
``offline`` (every intentional stop passes through ``stopping``).

The console lines are upstream's, in order: the banner, the exit code, the
out-of-memory flag, then either a restart or the reason there is none
(crash detection disabled for the server, or a previous crash less than
``system.crash_detection.timeout`` seconds ago).  A clean exit (code 0, no
OOM) is not a crash unless ``detect_clean_exit_as_crash`` says so.  Nothing
happens while the daemon shuts down or after the server was deleted.
"""

from __future__ import annotations

from twisted.logger import Logger

from ..environment import EnvironmentError as EnvError
from .lifecycle import environment_of, power
from .power import PowerError
from .server import Server

log = Logger()

CRASH_BANNER = "---------- Detected server process in a crashed state! ----------"
CRASH_DISABLED = "Aborting automatic restart, crash detection is disabled for this instance."
CRASH_TOO_SOON = "Aborting automatic restart, last crash occurred less than {} seconds ago."
CRASH_FAILED = "Server crash was detected but an error occurred while handling it."


async def handle_crash(server: Server) -> None:
    """
    lifecycle.md §11, after ``starting``/``running`` → ``offline``.
    """
    context = server.context
    if context.shutting_down or server.state != "offline" or server.occupancy.deleted:
        return
    if not server.crash_detection_enabled:
        server.daemon_line(CRASH_DISABLED)
        return
    exit_code, oom = environment_of(server).exit_state()
    crash = context.config.system.crash_detection
    if exit_code == 0 and not oom and not crash.detect_clean_exit_as_crash:
        return
    server.daemon_line(CRASH_BANNER)
    server.daemon_line("Exit code: {}".format(exit_code))
    server.daemon_line("Out of memory: {}".format("true" if oom else "false"))
    now = context.clock.seconds()
    if crash.timeout and server.crashed_at is not None and now - server.crashed_at < crash.timeout:
        server.daemon_line(CRASH_TOO_SOON.format(crash.timeout))
        return
    server.crashed_at = now
    try:
        await power(server, "start")
    except (PowerError, EnvError) as e:
        server.daemon_line(CRASH_FAILED)
        log.error("Restarting {uuid} after a crash failed: {error}", uuid=server.uuid,
                  error=str(e))
