"""
Egg install runs (lifecycle.md §16; api.md §4.6, §4.7, §8.1): the script
from the panel run by the environment's installer, its output streamed as
``install output`` and written to the install log, the report to the panel,
and the optional start afterwards.

While the script runs the server's occupancy is ``installing`` (power
actions are refused).  Decisions where the spec leaves room:

* a second install while one runs is ignored (api.md §4.6 project rule);
* the install report's "success" is "the pipeline ran", whatever the
  script's exit status (lifecycle.md §16.2); the exit status is logged and
  written to the install log;
* ``Installation process completed.`` is published whenever the installer
  ran (the MAY of §16.2).
"""

from __future__ import annotations

import os

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from ..config import Config
from ..environment import EnvironmentError as EnvError
from ..environment import InstallResult
from ..panel import PanelError
from .lifecycle import SyncError, power, stop_process, sync
from .occupancy import Occupied
from .power import PowerError
from .server import Server

log = Logger()

REINSTALL_BUDGET = 10.0
POST_INSTALL_LOCK_WAIT = 30.0
INSTALL_STARTING = "Starting installation process, this could take a few minutes..."
INSTALL_DONE = "Installation process completed."


async def install(server: Server, *, reinstall: bool = False, start_after: bool = False) -> bool:
    """
    One install run (lifecycle.md §16.2); returns whether it succeeded.
    Ignored (False) when one is already running.
    """
    context = server.context
    if server.occupancy.installing:
        log.info("Install of {uuid} ignored: one is already running", uuid=server.uuid)
        return False
    successful = True
    if not bool(server.settings.get("skip_egg_scripts", False)):
        try:
            server.occupancy.begin_install()
        except Occupied as e:
            log.info("Install of {uuid} refused: {error}", uuid=server.uuid, error=str(e))
            return False
        server.events.publish("install started", "")
        try:
            successful = await _run_script(server)
        finally:
            server.occupancy.finished()
    try:
        await context.panel.report_install(server.uuid, successful, reinstall)
    except PanelError as e:
        log.error("Reporting the install of {uuid} failed: {error}", uuid=server.uuid,
                  error=str(e))
    env = server.environment
    if env is not None:
        env.set_state("offline")
    server.events.publish("install completed", "")
    if successful and start_after:
        try:
            await power(server, "start", wait=POST_INSTALL_LOCK_WAIT)
        except (PowerError, EnvError) as e:
            log.error("Starting {uuid} after its install failed: {error}", uuid=server.uuid,
                      error=str(e))
    return successful


async def _run_script(server: Server) -> bool:
    context = server.context
    env = server.environment
    log_path = install_log_path(context.config, server.uuid)
    try:
        script = await context.panel.get_install_script(server.uuid)
    except PanelError as e:
        log.error("Fetching the install script of {uuid} failed: {error}", uuid=server.uuid,
                  error=str(e))
        return False
    if env is None:
        log.error("No environment can run the install script of {uuid}", uuid=server.uuid)
        return False
    image = str(script.get("container_image") or "")
    entrypoint = str(script.get("entrypoint") or "ash")
    variables = tuple(server.environment_variables())
    output: list[str] = []

    def on_line(line: str) -> None:
        output.append(line)
        server.events.publish("install output", line)

    await context.run_blocking(server.volume.ensure_root)
    server.events.publish("daemon message", INSTALL_STARTING)
    result: InstallResult
    try:
        result = await env.run_installer(str(script["script"]), image, entrypoint, variables,
                                         on_line)
    except CancelledError:
        raise
    except Exception as e:
        log.failure("The install script of {uuid} could not run", uuid=server.uuid)
        result = InstallResult(False, None, str(e))
    if result.completed:
        log.info("Install script of {uuid} exited with {code}", uuid=server.uuid,
                 code=result.exit_code)
        server.events.publish("daemon message", INSTALL_DONE)
    elif result.error:
        server.events.publish("install output", result.error)
    header = _install_header(server.uuid, image, entrypoint, variables, result.exit_code,
                             result.error)
    try:
        await context.run_blocking(_write_install_log, log_path, header, output)
    except OSError as e:
        log.error("Writing the install log of {uuid} failed: {error}", uuid=server.uuid,
                  error=str(e))
    return result.completed


def install_log_path(config: Config, uuid: str) -> str:
    """
    ``<system.log_directory>/install/<uuid>.log`` (lifecycle.md §16.4).
    """
    return os.path.join(config.system.log_directory, "install", uuid + ".log")


SCRIPT_OUTPUT = "| Script Output\n| ------------------------------\n"


def _install_header(uuid: str, image: str, entrypoint: str,
                    variables: tuple[tuple[str, str], ...], exit_code: int | None,
                    error: str) -> str:
    lines = ["Pterodactyl Server Installation Log", "", "|", "| Details", "| " + "-" * 30,
             "  Server UUID:          " + uuid,
             "  Container Image:      " + image,
             "  Container Entrypoint: " + entrypoint,
             "  Exit Code:            " + ("" if exit_code is None else str(exit_code))]
    if error:
        lines.append("  Error:                " + error)
    lines += ["", "|", "| Environment Variables", "| " + "-" * 30]
    lines += ["  {}={}".format(k, v) for k, v in variables]
    lines += ["", "|"]
    return "\n".join(lines) + "\n" + SCRIPT_OUTPUT


def _write_install_log(path: str, header: str, output: list[str]) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, 0o700, exist_ok=True)
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(header)
        for line in output:
            f.write(line)
            f.write("\n")
    os.replace(temp, path)


def read_install_log(path: str) -> str | None:
    """
    The script output part of an install log (api.md §8.1); ``None`` if
    there is no log.
    """
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    marker = text.find(SCRIPT_OUTPUT)
    return text[marker + len(SCRIPT_OUTPUT):] if marker >= 0 else text


async def reinstall(server: Server) -> None:
    """
    ``POST .../reinstall`` in the background (api.md §4.7).
    """
    if server.state != "offline":
        await stop_process(server, REINSTALL_BUDGET, True)
    try:
        await sync(server)
    except SyncError as e:
        log.error("Reinstall of {uuid} aborted: {error}", uuid=server.uuid, error=str(e))
        return
    await install(server, reinstall=True)


async def sync_and_install(server: Server) -> None:
    """
    ``POST .../install`` in the background (api.md §4.6).
    """
    if server.occupancy.installing:
        return
    try:
        await sync(server)
    except SyncError as e:
        log.error("Install of {uuid} aborted: {error}", uuid=server.uuid, error=str(e))
        return
    await install(server)
