"""
The node's remote pulls (api.md §6): the ones running, per server, with their
progress; at most ``MAX_PER_SERVER`` at once per server; cancellation.

Wire format of a listing (``Pulls.of_server`` → ``Pull.describe``)::

    {"Identifier": "3f2b8c1e-9d4a-4f6b-a1c2-7e5d9b0a4c18", "Progress": 0.42}

(capitalised keys, as upstream marshals its untagged structure; ``Progress``
is bytes received / ``Content-Length``, 0 before the answer arrives.)

A pull is tracked from ``start`` until it succeeds, fails, is cancelled or
runs out of its ``TIMEOUT`` (12 hours, as upstream), then forgotten.
``Pull.wait`` gives its outcome to a foreground request without tying the
pull to that request: a client that goes away does not cancel it (api.md
§2.1).  Each pull is one of its server's tasks, so deleting the server cancels it
(api.md §4.2).  Cancelling drops the connection and removes the temporary file, so unlike
upstream no partial file stays behind.  Failures of background pulls are
only logged.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..fs import FsError
from ..node import Node
from ..servers.server import Server
from .fetch import Fetcher, PullFailed
from .netguard import AddressPolicy
from .pullspec import InvalidName, PullUrl

log = Logger()

MAX_PER_SERVER = 3
#: Seconds a pull may take from start to end (upstream's client timeout).
TIMEOUT = 12 * 60 * 60
TOO_MANY = ("This server has reached its limit of 3 simultaneous remote file downloads at "
            "once. Please wait for one to complete before trying again.")


class TooManyPulls(Exception):
    """
    The server already runs ``MAX_PER_SERVER`` pulls: 400.
    """

    def __init__(self) -> None:
        super().__init__(TOO_MANY)


class Unavailable(Exception):
    """
    The daemon was built without outgoing connections (some tests).
    """


class Pull:
    """
    One tracked pull.
    """

    def __init__(self, server: str) -> None:
        self.identifier = str(uuid.uuid4())
        self.server = server
        self.received = 0
        self.length = 0
        self.task: Deferred[str] | None = None
        self._waiters: list[Deferred[str]] = []
        self._outcome: str | Failure | None = None

    @property
    def progress(self) -> float:
        """
        The fraction received, from 0 to 1.
        """
        return self.received / self.length if self.length else 0.0

    def describe(self) -> dict[str, Any]:
        """
        The listing entry (module docstring).
        """
        return {"Identifier": self.identifier, "Progress": self.progress}

    def update(self, received: int, length: int) -> None:
        """
        Record progress.
        """
        self.received, self.length = received, length

    def wait(self) -> Deferred[str]:
        """
        Fires with the written path, or fails as the pull did; cancelling it
        does not cancel the pull.
        """
        if self._outcome is not None:
            d: Deferred[str] = Deferred()
            _fire(d, self._outcome)
            return d
        d = Deferred(lambda waiter: self._waiters.remove(waiter))
        self._waiters.append(d)
        return d

    def finished(self, outcome: str | Failure) -> None:
        """
        The pull is over: tell whoever waits.
        """
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            _fire(d, outcome)

    def cancel(self) -> None:
        """
        Stop the pull (its temporary file is removed).
        """
        if self.task is not None:
            self.task.cancel()


def _fire(d: Deferred[str], outcome: str | Failure) -> None:
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


class Pulls:
    """
    The node's pulls.

    :param fetcher: what runs them (default: one over ``node.outgoing``).
    """

    def __init__(self, node: Node, fetcher: Fetcher | None = None) -> None:
        self._node = node
        self._fetcher = fetcher
        self._pulls: dict[str, Pull] = {}

    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            node, outgoing = self._node, self._node.outgoing
            if outgoing is None:
                raise Unavailable("remote downloads need outgoing connections")
            self._fetcher = Fetcher(node.clock, node.run_blocking, outgoing.connector,
                                    outgoing.resolver, outgoing.tls)
        return self._fetcher

    def of_server(self, server: str) -> list[Pull]:
        """
        The server's tracked pulls, oldest first.
        """
        return [p for p in self._pulls.values() if p.server == server]

    def start(self, server: Server, url: PullUrl, root: str, *, file_name: str = "",
              use_header: bool = False) -> Pull:
        """
        Track and start a pull into ``root`` of the server's volume.

        :raises TooManyPulls: the server runs ``MAX_PER_SERVER`` already.
        """
        if len(self.of_server(server.uuid)) >= MAX_PER_SERVER:
            raise TooManyPulls()
        fetcher = self._get_fetcher()
        policy = AddressPolicy.from_config(
            self._node.config.api.remote_download.allowed_networks)
        pull = Pull(server.uuid)
        self._pulls[pull.identifier] = pull
        task = Deferred.fromCoroutine(fetcher.fetch(
            url, policy, server.volume, root, file_name=file_name, use_header=use_header,
            progress=pull.update))
        pull.task = task
        # Background work of the server: deleting it cancels the pull.
        server.tasks.add(task)
        task.addTimeout(TIMEOUT, self._node.clock)
        task.addBoth(self._finished, pull, url, server)
        return pull

    def _finished(self, outcome: str | Failure, pull: Pull, url: PullUrl,
                  server: Server) -> None:
        self._pulls.pop(pull.identifier, None)
        if pull.task is not None:
            server.tasks.discard(pull.task)
        if isinstance(outcome, Failure):
            _log_failure(outcome, pull, url)
        else:
            log.info("Remote pull {identifier} of server {server} wrote {path}",
                     identifier=pull.identifier, server=pull.server, path=outcome)
        pull.finished(outcome)

    def cancel(self, server: str, identifier: str) -> None:
        """
        Cancel the pull ``identifier`` if it runs for ``server`` (anything else
        is ignored).
        """
        pull = self._pulls.get(identifier)
        if pull is not None and pull.server == server:
            pull.cancel()


_EXPECTED: tuple[type[BaseException], ...] = (PullFailed, InvalidName, FsError, TimeoutError)


def _log_failure(failure: Failure, pull: Pull, url: PullUrl) -> None:
    """
    Log why a pull ended early, naming the host only (a URL's query may hold a
    secret).
    """
    if failure.check(CancelledError):
        log.info("Remote pull {identifier} of server {server} from {host} was cancelled",
                 identifier=pull.identifier, server=pull.server, host=url.host)
    elif failure.check(*_EXPECTED):
        value = failure.value
        detail = getattr(value, "refused", None)
        log.warn("Remote pull {identifier} of server {server} from {host} failed: {reason}",
                 identifier=pull.identifier, server=pull.server, host=url.host,
                 reason=str(detail or value) or value.__class__.__name__)
    else:
        log.failure("Remote pull {identifier} of server {server} from {host} failed", failure,
                    identifier=pull.identifier, server=pull.server, host=url.host)
