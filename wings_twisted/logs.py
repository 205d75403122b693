"""
Where the daemon's log goes (config.md §4.1, §4.2): ``<system.log_directory>/wings.log``
beside the console, as upstream Wings writes both.

* **Levels.**  Info and above; ``debug`` (the ``--debug`` flag or the
  ``debug`` key) adds debug events and the access log (a ``Site`` setting).
* **Noise.**  Twisted announces every client connection's factory ("Starting
  factory _HTTP11ClientFactory(...)"); outside debug those two messages are
  dropped, wherever they come from (Panel calls, the Docker engine, S3).
* **Rotation** is logrotate's job, as upstream: with
  ``system.enable_log_rotate`` the daemon writes ``/etc/logrotate.d/wings``
  at boot when ``/etc/logrotate.d`` exists and the file does not (10 MiB,
  compressed, 7 days).  After rotating, logrotate asks systemd to reload the
  unit, whose ``ExecReload`` sends SIGHUP to the daemon's main process only;
  :class:`LogFile` then reopens the path.  Upstream's file signals with
  ``systemctl kill -s HUP wings.service``, which reaches *every* process of
  the unit, game servers of the process environment included; a file that
  is byte for byte what upstream generated is therefore replaced with ours
  (any other existing file is the operator's and is left alone).

:func:`start_file_logging` puts it together; only the composition root
(``tap``) and the command line (``cli``) call this module, everything else
logs through ``twisted.logger.Logger``.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import IO, cast

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogFilterPredicate,
                            ILogObserver, LogEvent, LogLevel, LogLevelFilterPredicate,
                            LogPublisher, Logger, PredicateResult, formatEventAsClassicLogText,
                            globalLogPublisher)
from zope.interface import implementer

from . import __version__
from .reactor import IReactor

log = Logger()

#: The daemon's log file, in ``system.log_directory``.
LOG_NAME = "wings.log"
#: Where logrotate reads its per-package files.
LOGROTATE_DIRECTORY = "/etc/logrotate.d"

_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})

_LOGROTATE = """{directory}/wings.log {{
    size 10M
    compress
    delaycompress
    dateext
    maxage 7
    missingok
    notifempty
    postrotate
        /usr/bin/systemctl reload wings.service >/dev/null 2>&1 || true
    endscript
}}
"""

# What upstream Wings writes, older releases without the redirection (its
# HUP goes to the whole unit).
_UPSTREAM_HUP = "/usr/bin/systemctl kill -s HUP wings.service"
_UPSTREAM_LOGROTATE = tuple(
    _LOGROTATE.replace("/usr/bin/systemctl reload wings.service", _UPSTREAM_HUP).replace(
        " >/dev/null 2>&1 || true", suffix)
    for suffix in (" >/dev/null 2>&1 || true", ""))


class LogFile:
    """
    An append-only text file that can be reopened at the same path (after
    logrotate moved it away).  Provides what ``FileLogObserver`` writes to.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = self._open()

    def _open(self) -> IO[str]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        """
        Append ``text``.
        """
        self._file.write(text)

    def flush(self) -> None:
        """
        Flush to the kernel (``FileLogObserver`` does after every event).
        """
        self._file.flush()

    def reopen(self) -> None:
        """
        Start a new file at ``path``; if that fails, keep writing to the
        old one.
        """
        try:
            fresh = self._open()
        except OSError:
            return
        old, self._file = self._file, fresh
        old.close()

    def close(self) -> None:
        """
        Close the file.
        """
        self._file.close()


@implementer(ILogFilterPredicate)
class _Quiet:
    """
    Drops Twisted's "Starting/Stopping factory" announcements.
    """

    def __call__(self, event: LogEvent) -> PredicateResult:
        if event.get("log_format") in _NOISE:
            return cast(PredicateResult, PredicateResult.no)
        return cast(PredicateResult, PredicateResult.maybe)


@implementer(ILogObserver)
class OnceObserver:
    """
    Passes each event on once.

    Until logging begins, Twisted buffers events, and ``beginLoggingTo``
    replays that buffer to every observer of the global publisher, including
    one added earlier that already saw them live (``wings.log``).  Replayed
    events are the same objects, so they are recognised by identity until
    :meth:`settle` (called once the reactor runs: logging has begun by then).
    """

    def __init__(self, observer: ILogObserver) -> None:
        self._observer = observer
        self._seen: dict[int, LogEvent] | None = {}

    def __call__(self, event: LogEvent) -> None:
        seen = self._seen
        if seen is not None:
            if seen.get(id(event)) is event:
                return
            seen[id(event)] = event
        self._observer(event)

    def settle(self) -> None:
        """
        Stop remembering events.
        """
        self._seen = None


def filtered(observer: ILogObserver, debug: bool) -> ILogObserver:
    """
    ``observer`` behind the daemon's level and noise filters.
    """
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if debug else LogLevel.info)
    predicates: list[ILogFilterPredicate] = [level]
    if not debug:
        predicates.insert(0, _Quiet())
    return FilteringLogObserver(observer, predicates)


def text_observer(stream: IO[str] | LogFile, debug: bool) -> ILogObserver:
    """
    Classic one-line-per-event text (``<time> [<system>] <message>``) on
    ``stream``, filtered for ``debug``.
    """
    # FileLogObserver only calls write() and flush(), which LogFile has.
    return filtered(FileLogObserver(cast(IO[str], stream), formatEventAsClassicLogText), debug)


def open_log_file(log_directory: str) -> LogFile:
    """
    Create ``log_directory`` (0700) and its ``install`` folder, and open
    ``wings.log`` for appending.

    :raises OSError: the directory or the file cannot be created.
    """
    os.makedirs(log_directory, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(log_directory, "install"), mode=0o700, exist_ok=True)
    return LogFile(os.path.join(log_directory, LOG_NAME))


def logrotate_text(log_directory: str) -> str:
    """
    The ``/etc/logrotate.d/wings`` this daemon installs.
    """
    return _LOGROTATE.format(directory=log_directory)


def install_logrotate(log_directory: str, directory: str = LOGROTATE_DIRECTORY) -> str:
    """
    Install ``<directory>/wings`` as described in the module docstring and
    say what was done: ``"installed"``, ``"replaced"`` (upstream's file),
    ``"kept"`` (the operator's file) or ``"no logrotate"`` (no directory).

    :raises OSError: the file could not be written.
    """
    if not os.path.isdir(directory):
        return "no logrotate"
    path = os.path.join(directory, "wings")
    outcome = "installed"
    try:
        with open(path, encoding="utf-8") as f:
            current = f.read()
    except FileNotFoundError:
        pass
    else:
        upstream = {_words(t.format(directory=log_directory)) for t in _UPSTREAM_LOGROTATE}
        if _words(current) not in upstream:
            return "kept"
        outcome = "replaced"
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(logrotate_text(log_directory))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return outcome


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def tail(path: str, count: int, *, chunk: int = 64 * 1024) -> list[str]:
    """
    The last ``count`` lines of the text file ``path`` (read from its end,
    so a large log costs little); ``[]`` when it does not exist.
    """
    if count <= 0:
        return []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            step = min(chunk, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]


def start_file_logging(log_directory: str, *, debug: bool, rotate: bool, reactor: IReactor,
                       publisher: LogPublisher = globalLogPublisher,
                       logrotate_directory: str = LOGROTATE_DIRECTORY) -> LogFile:
    """
    Send every event of ``publisher`` to ``<log_directory>/wings.log`` at
    the daemon's level, reopen the file on SIGHUP (from the main thread
    only), and install the logrotate file when ``rotate`` says so.

    :raises OSError: the directory or the file cannot be created.
    """
    logfile = open_log_file(log_directory)
    observer = OnceObserver(text_observer(logfile, debug))
    publisher.addObserver(observer)
    reactor.callWhenRunning(observer.settle)

    def reopen() -> None:
        logfile.reopen()
        log.info("Reopened {path} (SIGHUP)", path=logfile.path)

    if threading.current_thread() is threading.main_thread():
        # Left to Python's default, SIGHUP would end the daemon.
        signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reopen))
    log.info("wings-twisted {version}: writing logs to {path}", version=__version__,
             path=logfile.path)
    if rotate:
        try:
            outcome = install_logrotate(log_directory, logrotate_directory)
        except OSError as e:
            log.warn("Could not install /etc/logrotate.d/wings: {error}", error=str(e))
        else:
            if outcome in ("installed", "replaced"):
                log.info("Log rotation: /etc/logrotate.d/wings {outcome}", outcome=outcome)
    return logfile
