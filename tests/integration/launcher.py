"""
``python -m tests.integration.launcher <twistd arguments>``: the real
``twistd`` with two test seams the daemon has no switch for, both set through
the environment and both off when their variable is absent:

* ``WINGS_TEST_RESOLVER=<file.json>``: the reactor's name resolver answers
  the names of ``{"name": [["1.2.3.4"], ["5.6.7.8"]]}`` with one answer per
  call (the last repeats) — a name whose answer changes is a DNS-rebinding
  attacker — and hands every other name to the system resolver.  Each call
  is appended to ``<file.json>.calls``, one name per line.
* ``WINGS_TEST_RESTORING=<uuid>``: that server is created in the
  ``restoring`` state, so the write guard (api.md §2.9) is up — no route can
  start a restore until backups land.

Everything else is the daemon as ``twistd -n wings`` runs it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from zope.interface import implementer

from tests.unit.pullpeer import ScriptedResolver


@implementer(IHostnameResolver)
class FallbackResolver(ScriptedResolver):
    """
    Scripted answers (`pullpeer.ScriptedResolver`) for the names of the script, each call
    appended to the file ``calls``; the system resolver for the rest.
    """

    def __init__(self, answers: dict[str, list[list[str]]], fallback: IHostnameResolver,
                 calls: str) -> None:
        super().__init__(answers)
        self._fallback = fallback
        self._calls_file = calls

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        if hostName not in self.answers:
            resolution: IHostResolution = self._fallback.resolveHostName(
                resolutionReceiver, hostName, portNumber, addressTypes, transportSemantics)
            return resolution
        with open(self._calls_file, "a") as f:
            f.write(hostName + "\n")
        return super().resolveHostName(resolutionReceiver, hostName, portNumber, addressTypes,
                                       transportSemantics)


def main() -> None:
    """
    Install the seams the environment asks for, then run twistd.
    """
    from twisted.internet import reactor

    answers = os.environ.get("WINGS_TEST_RESOLVER")
    if answers:
        with open(answers) as f:
            script = json.load(f)
        reactor.installNameResolver(FallbackResolver(  # type: ignore[attr-defined]
            script, reactor.nameResolver, answers + ".calls"))  # type: ignore[attr-defined]
    restoring = os.environ.get("WINGS_TEST_RESTORING")
    if restoring:
        from wings_twisted.servers.server import Server
        created = Server.__init__

        def restoring_init(self: Server, uuid: str, *args: Any, **kwargs: Any) -> None:
            created(self, uuid, *args, **kwargs)
            if uuid == restoring:
                self.occupancy.begin_restore()

        Server.__init__ = restoring_init  # type: ignore[method-assign]
    from twisted.scripts.twistd import run
    run()


if __name__ == "__main__":
    main()
