"""
What happens to a server over time (lifecycle.md §1.7, §5–§12, §16, §18):
power actions under the power lock, the pre-start steps, panel syncs, crash
handling, install runs and deletion.

Everything here is a coroutine run on the reactor thread; blocking work
(disk walks, chown, egg configuration files) goes to worker threads through
``node.run_blocking``.  The process itself is the environment's business
(``environment/``); the server turns its events into websocket events.

Decisions where the spec leaves room:

* a second install while one runs is ignored (api.md §4.6 project rule);
* the install report's "success" is "the pipeline ran", whatever the
  script's exit status (lifecycle.md §16.2); the exit status is logged and
  written to the install log;
* ``Installation process completed.`` is published whenever the installer
  ran (the MAY of §16.2);
* a suspended server is stopped with a one-minute budget; its sockets are
  closed with 4409 only when ``websocket.close_on_suspend`` is on.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from .eggconfig import apply_configs
from .environment import EnvironmentError as EnvError
from .panel import PanelError
from .power import ACTIONS, PowerError, ServerBusy, UnknownPowerAction

if TYPE_CHECKING:
    from .server import Server

log = Logger()

STOP_BUDGET = 600.0
SUSPEND_BUDGET = 60.0
REINSTALL_BUDGET = 10.0
POST_INSTALL_LOCK_WAIT = 30.0

CHECKING_DISK = "Checking server disk space usage, this could take a few seconds..."
UPDATING_CONFIGS = "Updating process configuration files..."
FIXING_PERMISSIONS = ("Ensuring file permissions are set correctly, this could take a few "
                      "seconds...")
CRASH_BANNER = "---------- Detected server process in a crashed state! ----------"
CRASH_DISABLED = "Aborting automatic restart, crash detection is disabled for this instance."
CRASH_TOO_SOON = "Aborting automatic restart, last crash occurred less than {} seconds ago."
CRASH_FAILED = "Server crash was detected but an error occurred while handling it."
INSTALL_STARTING = "Starting installation process, this could take a few minutes..."
INSTALL_DONE = "Installation process completed."


class SyncError(Exception):
    """
    The panel's configuration could not be fetched or applied.
    """


def _environment(server: Server) -> Any:
    if server.environment is None:
        raise PowerError("no environment can run this server: environment.driver {!r} is not "
                         "available in this build".format(
                             server.node.config.environment.driver if server.node else "?"))
    return server.environment


# -- power -----------------------------------------------------------------------------------------


async def power(server: Server, action: str, *, wait: float = 0) -> None:
    """
    Run ``action`` (lifecycle.md §5–§9); ``PowerError`` when refused.
    """
    if action not in ACTIONS:
        raise UnknownPowerAction()
    if server.installing:
        raise ServerBusy("server is currently installing")
    if server.transferring:
        raise ServerBusy("server is currently being transferred")
    if server.restoring:
        raise ServerBusy("server is currently being restored")
    env = _environment(server)
    if action == "kill":
        took = server.power_lock.try_acquire()
        try:
            await kill(server)
        finally:
            if took:
                server.power_lock.release()
        return
    await server.power_lock.acquire(wait)
    try:
        if action in ("stop", "restart"):
            await env.wait_for_stop(STOP_BUDGET, True)
        if action in ("start", "restart"):
            if server.state != "offline":
                raise PowerError("server is running")
            await pre_start(server)
            await env.start()
    finally:
        server.power_lock.release()


async def kill(server: Server) -> None:
    """
    SIGKILL the process (lifecycle.md §6.3).
    """
    await _environment(server).terminate("SIGKILL")


async def stop_process(server: Server, budget: float, kill_on_timeout: bool) -> None:
    """
    Stop outside a power action (disk limit, suspension, reinstall).
    """
    await _environment(server).wait_for_stop(budget, kill_on_timeout)


async def pre_start(server: Server) -> None:
    """
    lifecycle.md §5 step 4: sync, suspension, disk, egg files, ownership.
    """
    node = server.node
    assert node is not None
    try:
        await sync(server)
    except SyncError as e:
        raise PowerError("unable to sync server data from Panel instance: {}".format(e))
    if server.suspended:
        raise PowerError("server is currently in a suspended state")
    limit = server.disk_limit_bytes
    if limit <= 0:
        server.disk_bytes()
    else:
        server.daemon_line(CHECKING_DISK)
        volume = server.volume
        if volume.usage_is_stale():
            usage = await node.run_blocking(volume.usage)
        else:
            usage = volume.cached_usage()
        if usage > limit:
            raise PowerError("filesystem: not enough disk space")
    server.daemon_line(UPDATING_CONFIGS)
    errors = await node.run_blocking(apply_configs, server.volume, server.configs, node.config)
    for error in errors:
        log.warn("Egg configuration file of {uuid}: {error}", uuid=server.uuid, error=error)
    if node.config.system.check_permissions_on_boot:
        server.daemon_line(FIXING_PERMISSIONS)
        try:
            await node.run_blocking(server.volume.chown_all)
        except OSError as e:
            raise PowerError("failed to chown the server volume: {}".format(e.strerror or e))


# -- sync ------------------------------------------------------------------------------------------


async def sync(server: Server) -> None:
    """
    Fetch and apply the panel's configuration (lifecycle.md §1.7).
    """
    node = server.node
    assert node is not None
    try:
        document = await node.panel.get_server(server.uuid)
    except PanelError as e:
        if e.status == 404:
            raise SyncError("server does not exist on remote system")
        raise SyncError(str(e))
    settings = document.get("settings")
    process = document.get("process_configuration")
    from .server import ServerConfigError
    try:
        server.update(settings, process)  # type: ignore[arg-type]
    except ServerConfigError as e:
        raise SyncError(str(e))
    env = server.environment
    if env is None:
        return
    if not server.suspended:
        try:
            await env.update_limits()
        except EnvError as e:
            log.warn("Applying new limits to {uuid} failed: {error}", uuid=server.uuid,
                     error=str(e))
        return
    if node.config.websocket.close_on_suspend:
        server.close_sockets(4409, "server is suspended")
    if server.state != "offline":
        server.track(stop_process, server, SUSPEND_BUDGET, True)


# -- crashes ---------------------------------------------------------------------------------------


async def handle_crash(server: Server) -> None:
    """
    lifecycle.md §11, after ``starting``/``running`` → ``offline``.
    """
    node = server.node
    if node is None or node.shutting_down or server.state != "offline" or server.deleted:
        return
    if not server.crash_detection_enabled:
        server.daemon_line(CRASH_DISABLED)
        return
    exit_code, oom = _environment(server).exit_state()
    crash = node.config.system.crash_detection
    if exit_code == 0 and not oom and not crash.detect_clean_exit_as_crash:
        return
    server.daemon_line(CRASH_BANNER)
    server.daemon_line("Exit code: {}".format(exit_code))
    server.daemon_line("Out of memory: {}".format("true" if oom else "false"))
    now = node.clock.seconds()
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


# -- installation ----------------------------------------------------------------------------------


async def install(server: Server, *, reinstall: bool = False, start_after: bool = False) -> bool:
    """
    One install run (lifecycle.md §16.2); returns whether it succeeded.
    Ignored (False) when one is already running.
    """
    node = server.node
    assert node is not None
    if server.installing:
        log.info("Install of {uuid} ignored: one is already running", uuid=server.uuid)
        return False
    successful = True
    if not bool(server.settings.get("skip_egg_scripts", False)):
        server.events.publish("install started", "")
        server.installing = True
        try:
            successful = await _run_script(server)
        finally:
            server.installing = False
    try:
        await node.panel.report_install(server.uuid, successful, reinstall)
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
    node = server.node
    assert node is not None
    env = server.environment
    log_path = install_log_path(node.config, server.uuid)
    try:
        script = await node.panel.get_install_script(server.uuid)
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

    await node.run_blocking(server.volume.ensure_root)
    server.events.publish("daemon message", INSTALL_STARTING)
    try:
        result = await env.run_installer(str(script["script"]), image, entrypoint, variables,
                                         on_line)
    except CancelledError:
        raise
    except Exception as e:
        log.failure("The install script of {uuid} could not run", uuid=server.uuid)
        result = None
        error = str(e)
    else:
        error = result.error
    completed = bool(result is not None and result.completed)
    if completed:
        log.info("Install script of {uuid} exited with {code}", uuid=server.uuid,
                 code=result.exit_code if result is not None else None)
        server.events.publish("daemon message", INSTALL_DONE)
    elif error:
        server.events.publish("install output", error)
    header = _install_header(server.uuid, image, entrypoint, variables,
                             result.exit_code if result is not None else None, error)
    try:
        await node.run_blocking(_write_install_log, log_path, header, output)
    except OSError as e:
        log.error("Writing the install log of {uuid} failed: {error}", uuid=server.uuid,
                  error=str(e))
    return completed


def install_log_path(config: Any, uuid: str) -> str:
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
    if server.installing:
        return
    try:
        await sync(server)
    except SyncError as e:
        log.error("Install of {uuid} aborted: {error}", uuid=server.uuid, error=str(e))
        return
    await install(server)


# -- deletion --------------------------------------------------------------------------------------


async def delete(server: Server) -> None:
    """
    lifecycle.md §18 up to the volume removal (which the caller runs in
    the background).
    """
    server.settings["suspended"] = True
    server.deleted = True
    if server.transferring:
        server.events.publish("transfer status", "completed")
    server.events.publish("deleted", "null")
    for task in list(server.tasks):
        task.cancel()
    server.close_sockets(1001, "server deleted")
    server.events.close()
    env = server.environment
    if env is not None:
        await env.destroy()


