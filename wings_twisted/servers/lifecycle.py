"""
What happens to a server over time (lifecycle.md §1.7, §5–§10, §18): power
actions under the power lock, the pre-start steps, panel syncs and
deletion.  Crash handling is ``crash``, install runs are ``install``.

Everything here is a coroutine run on the reactor thread; blocking work
(disk walks, chown, egg configuration files) goes to worker threads through
``context.run_blocking``.  The process itself is the environment's business
(``environment/``); the runtime turns its events into websocket events.

Whether a power action may run at all is the server's occupancy
(``occupancy.Occupancy.check_power``), read before anything else.

Decision: a suspended server is stopped with a one-minute budget; its
sockets are closed with 4409 only when ``websocket.close_on_suspend`` is on.
Its SFTP connections are always ended (sftp.md §4), as they are on deletion.
"""

from __future__ import annotations

from twisted.logger import Logger

from ..eggconfig import apply_configs
from ..environment import EnvironmentError as EnvError
from ..environment import IEnvironment
from ..panel import PanelError
from .power import ACTIONS, PowerError, UnknownPowerAction
from .server import Server, ServerConfigError

log = Logger()

STOP_BUDGET = 600.0
SUSPEND_BUDGET = 60.0
DISK_STOP_BUDGET = 60.0

CHECKING_DISK = "Checking server disk space usage, this could take a few seconds..."
UPDATING_CONFIGS = "Updating process configuration files..."
FIXING_PERMISSIONS = ("Ensuring file permissions are set correctly, this could take a few "
                      "seconds...")


class SyncError(Exception):
    """
    The panel's configuration could not be fetched or applied.
    """


def environment_of(server: Server) -> IEnvironment:
    """
    The server's environment; ``PowerError`` when none can run it here.
    """
    if server.environment is None:
        raise PowerError("no environment can run this server: environment.driver {!r} is not "
                         "available in this build".format(
                             server.context.config.environment.driver))
    return server.environment


# -- power -----------------------------------------------------------------------------------------


async def power(server: Server, action: str, *, wait: float = 0) -> None:
    """
    Run ``action`` (lifecycle.md §5–§9); ``PowerError`` when refused.
    """
    if action not in ACTIONS:
        raise UnknownPowerAction()
    server.occupancy.check_power()
    env = environment_of(server)
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
    await environment_of(server).terminate("SIGKILL")


async def stop_process(server: Server, budget: float, kill_on_timeout: bool) -> None:
    """
    Stop outside a power action (disk limit, suspension, reinstall).
    """
    await environment_of(server).wait_for_stop(budget, kill_on_timeout)


async def stop_for_disk(server: Server) -> None:
    """
    The disk limit was exceeded while running (lifecycle.md §12): stop,
    killing after a minute.
    """
    await stop_process(server, DISK_STOP_BUDGET, True)


async def pre_start(server: Server) -> None:
    """
    lifecycle.md §5 step 4: sync, suspension, disk, egg files, ownership.
    """
    context = server.context
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
            usage = await context.run_blocking(volume.usage)
        else:
            usage = volume.cached_usage()
        if usage > limit:
            raise PowerError("filesystem: not enough disk space")
    server.daemon_line(UPDATING_CONFIGS)
    errors = await context.run_blocking(apply_configs, server.volume, server.configs,
                                        context.config)
    for error in errors:
        log.warn("Egg configuration file of {uuid}: {error}", uuid=server.uuid, error=error)
    if context.config.system.check_permissions_on_boot:
        server.daemon_line(FIXING_PERMISSIONS)
        try:
            await context.run_blocking(server.volume.chown_all)
        except OSError as e:
            raise PowerError("failed to chown the server volume: {}".format(e.strerror or e))


# -- sync ------------------------------------------------------------------------------------------


async def sync(server: Server) -> None:
    """
    Fetch and apply the panel's configuration (lifecycle.md §1.7).
    """
    context = server.context
    try:
        document = await context.panel.get_server(server.uuid)
    except PanelError as e:
        if e.status == 404:
            raise SyncError("server does not exist on remote system")
        raise SyncError(str(e))
    settings = document.get("settings")
    process = document.get("process_configuration")
    try:
        server.update(settings, process)  # type: ignore[arg-type]
    except ServerConfigError as e:
        raise SyncError(str(e))
    if server.suspended:
        server.end_file_sessions("server suspended")
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
    if context.config.websocket.close_on_suspend:
        server.close_sockets(4409, "server is suspended")
    if server.state != "offline":
        server.track(stop_process, server, SUSPEND_BUDGET, True)


# -- deletion --------------------------------------------------------------------------------------


async def delete(server: Server) -> None:
    """
    lifecycle.md §18 up to the volume removal (which the caller runs in
    the background).
    """
    server.settings["suspended"] = True
    transferring = server.occupancy.transferring
    server.occupancy.delete()
    if transferring:
        server.events.publish("transfer status", "completed")
    server.events.publish("deleted", "null")
    for task in list(server.tasks):
        task.cancel()
    server.close_sockets(1001, "server deleted")
    server.end_file_sessions("server deleted")
    server.events.close()
    env = server.environment
    if env is not None:
        await env.destroy()


