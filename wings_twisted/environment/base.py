"""
What every ``IEnvironment`` keeps the same way, whatever runs the server: the tracked state and
the listener told of its changes, the settings, the exit of the last run and the installer in
flight.  ``process.ProcessEnvironment`` and ``docker.DockerEnvironment`` build on it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import STATES, EnvironmentSettings, IEnvironmentListener, InstallResult


class EnvironmentBase:
    """
    The state, listener, settings, exit and installer bookkeeping of an environment.
    """

    _log = Logger()

    def __init__(self, settings: EnvironmentSettings) -> None:
        self._settings = settings
        self._listener: Any = None
        self.state = "offline"
        #: ``(exit_code, oom_killed)`` of the last run.
        self._exit = (0, False)
        self._installer: Deferred[InstallResult] | None = None

    def set_state(self, state: str) -> None:
        """
        Set the tracked state; notify the listener only on a change.
        """
        if state not in STATES:
            raise ValueError("unknown state {!r}".format(state))
        old, self.state = self.state, state
        if old != state:
            self._notify("state_changed", old, state)

    def set_listener(self, listener: IEnvironmentListener) -> None:
        """
        Where state changes, lines, samples and notices go.
        """
        self._listener = listener

    def _notify(self, method: str, *args: Any) -> None:
        # A listener without the method (no listener yet, or one that ignores notices) is
        # skipped; one that raises is logged, never allowed into the environment's own flow.
        target = getattr(self._listener, method, None)
        if target is None:
            return
        try:
            target(*args)
        except Exception:
            self._log.failure("environment listener {method} failed", method=method)

    @property
    def settings(self) -> EnvironmentSettings:
        """
        The current settings.
        """
        return self._settings

    def apply_settings(self, settings: EnvironmentSettings) -> None:
        """
        Adopt new settings: the next start uses them (limits also through ``update_limits``).
        """
        self._settings = settings

    def exit_state(self) -> tuple[int, bool]:
        """
        ``(exit_code, oom_killed)`` of the last run.
        """
        return self._exit

    def _track_installer(self, d: Deferred[InstallResult]) -> Deferred[InstallResult]:
        """
        Remember ``d`` as the installer in flight (``destroy`` cancels it) until it ends.
        """
        self._installer = d

        def forget(result: Any) -> Any:
            if self._installer is d:
                self._installer = None
            return result

        return d.addBoth(forget)


def exit_waiter(waiters: list[Deferred[None]], timeout: float,
                clock: IReactorTime) -> Deferred[None]:
    """
    A Deferred fired by `release_waiters` when the run ends, failing with ``TimeoutError``
    after ``timeout`` seconds; cancelling it (or the timeout) takes it off ``waiters``.
    """
    def forget(d: Deferred[None]) -> None:
        if d in waiters:
            waiters.remove(d)

    waiter: Deferred[None] = Deferred(forget)
    waiters.append(waiter)
    return waiter.addTimeout(timeout, clock)


def release_waiters(waiters: list[Deferred[None]]) -> None:
    """
    The run ended: fire every `exit_waiter` of it.
    """
    pending = list(waiters)
    waiters.clear()
    for waiter in pending:
        waiter.callback(None)
