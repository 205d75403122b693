"""
The reactor as the daemon uses it: one interface naming everything the
composition root hands down as "the reactor" (timers, processes, TCP and
UNIX connections, name resolution, calls from worker threads, shutdown
triggers).  Twisted's global reactor provides all of it; unit tests pass a
``Clock`` or ``MemoryReactorClock`` where only part of it is used.

Only ``tap.py`` imports the global reactor; everything below receives it.
"""

from __future__ import annotations

from twisted.internet.interfaces import (IReactorCore, IReactorFromThreads,
                                         IReactorPluggableNameResolver, IReactorProcess,
                                         IReactorTCP, IReactorTime, IReactorUNIX)


class IReactor(IReactorCore, IReactorTime, IReactorProcess, IReactorTCP, IReactorUNIX,
               IReactorPluggableNameResolver, IReactorFromThreads):
    """
    Everything the daemon asks of its reactor.
    """
