"""
One seam for running blocking work (file I/O, archive work, walks) off the
reactor thread.

Everything below ``tap.py`` receives a ``RunBlocking`` callable instead of
calling ``deferToThread`` itself, so unit tests can pass ``run_inline`` and
stay synchronous and deterministic.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class RunBlocking(Protocol):
    """
    Run ``fn(*args, **kwargs)`` somewhere it may block; fire with its result.
    """

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]: ...


def run_inline(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run ``fn`` immediately on the calling thread (tests, and cheap calls).
    """
    try:
        return succeed(fn(*args, **kwargs))
    except BaseException:
        return fail()


def thread_pool_runner(reactor: IReactorFromThreads, pool: ThreadPool) -> RunBlocking:
    """
    Build a ``RunBlocking`` that runs work on ``pool`` and reports back to
    ``reactor``.
    """

    def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(reactor, pool, fn, *args, **kwargs)

    return run
