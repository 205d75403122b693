"""
What the server layer needs from the daemon around it.

``ServerContext`` is a structural type: ``wings_twisted.node.Node`` provides
it, and so would any test double.  The server layer is written against it
instead of importing the node, so that ``servers/`` sits below ``node.py``
in the package's layers (nothing imports upward).

``config`` is read on every use: ``POST /api/update`` swaps it as a whole.
``make_environment`` is the environment factory the composition root picked
for ``environment.driver`` (``tap.environment_factory``); it answers ``None``
when no environment of that driver can run here.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from twisted.internet.interfaces import IReactorTime

from ..blocking import RunBlocking
from ..config import Config
from ..environment import EnvironmentSettings, IEnvironment
from ..panel import PanelClient

#: Builds the environment of one server from its settings (or ``None``).
EnvironmentFactory = Callable[[EnvironmentSettings], Optional[IEnvironment]]


class ServerContext(Protocol):
    """
    The daemon's shared dependencies, as the server layer uses them.
    """

    config: Config
    clock: IReactorTime
    run_blocking: RunBlocking
    panel: PanelClient
    #: Set when the daemon stops: no crash restarts from then on.
    shutting_down: bool
    #: The owner of volume files (``system.user``).
    uid: int
    gid: int
    make_environment: EnvironmentFactory
