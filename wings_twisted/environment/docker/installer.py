"""
The install container (lifecycle.md §16.2 steps 4–9, §16.3).

The script is written to ``<system.tmp_directory>/<uuid>/install.sh``
(directory 0700, file 0644, CRLF turned into LF), the image made available
(``images.ensure_image``: pulled with registry credentials, a failed pull
tolerated when the image exists locally), a leftover ``<uuid>_installer``
removed, the installer created (``spec.installer_container``), attached
before it starts (so its first line is not lost), started, and its output
streamed line by line to ``on_line`` until the stream ends.  The exit code
comes from inspecting it; the container and the script directory are
removed afterwards whatever happened.

Success is "the pipeline ran" (§16.2): a script exiting non-zero still
completes; failing to write the script, to get the image, or to create,
attach or start the container does not, and says why in
``InstallResult.error``.  Cancelling (the server is deleted) force-removes
the container.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from ...blocking import RunBlocking
from .. import EnvironmentSettings, InstallResult
from ..lines import LineSplitter
from .attach import attach
from .engine import Engine
from .errors import DockerError
from .images import ensure_image
from .spec import installer_container, installer_name

log = Logger()

#: Seconds to wait for "not running" once the output stream ended.
EXIT_WAIT = 30.0


def write_script(directory: str, script: str) -> None:
    """
    ``<directory>/install.sh`` (blocking: run through ``run_blocking``).
    """
    os.makedirs(directory, 0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    path = os.path.join(directory, "install.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write(script.replace("\r\n", "\n"))
    os.chmod(path, 0o644)


async def run(engine: Engine, settings: EnvironmentSettings, run_blocking: RunBlocking, *,
              script: str, image: str, entrypoint: str, env: tuple[tuple[str, str], ...],
              on_line: Callable[[str], None],
              on_progress: Callable[[str], None]) -> InstallResult:
    """
    One install run (module docstring).
    """
    config = engine.config()
    name = installer_name(settings.uuid)
    directory = os.path.join(config.system.tmp_directory, settings.uuid)
    created = False
    try:
        try:
            await run_blocking(write_script, directory, script)
        except OSError as e:
            return InstallResult(False, None, "cannot write the install script: {}".format(
                e.strerror or e))
        try:
            view = await engine.network()
            await ensure_image(engine.client, image, config, on_progress)
            await engine.remove(name, force=True)
            body = installer_container(settings, config, view, image=image, entrypoint=entrypoint,
                                       script_directory=directory, env=env)
            await engine.create(name, body)
            created = True
            splitter = LineSplitter(on_line)
            stream = await attach(engine.client, name, splitter.feed, tty=True)
            await engine.start(name)
        except DockerError as e:
            log.warn("Installer of {uuid} could not run: {error}", uuid=settings.uuid,
                     error=e.message)
            return InstallResult(False, None, e.message)
        ended: Deferred[None] = stream.ended
        try:
            await ended
        except CancelledError:
            stream.close()
            raise
        splitter.flush()
        try:
            await engine.wait_stopped(name, EXIT_WAIT)
            info = await engine.inspect(name)
        except DockerError as e:
            return InstallResult(False, None, e.message)
        state = (info or {}).get("State", {})
        code = state.get("ExitCode")
        return InstallResult(True, code if isinstance(code, int) else None)
    finally:
        if created:
            try:
                await engine.remove(name, force=True)
            except DockerError as e:
                log.warn("Removing {name} failed: {error}", name=name, error=e.message)
        await run_blocking(shutil.rmtree, directory, True)
