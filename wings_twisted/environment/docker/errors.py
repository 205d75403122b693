"""
The error every Engine API failure becomes, and how the engine's error
shapes map to it (lifecycle.md §21.3): 404 is "not found" (several callers
treat it as success), 409 a conflict, anything else an engine error carrying
the engine's ``message`` (Docker and podman answer ``{"message": "..."}``;
podman adds ``cause`` and ``response``).  A transport failure (no socket, a
refused or dropped connection, a timeout) has status 0.
"""

from __future__ import annotations

import json

from twisted.python.failure import Failure


class DockerError(Exception):
    """
    The engine could not be reached, did not answer in time, or answered
    with an error (``status`` is the HTTP status, 0 when there was none).
    ``message`` is what the daemon shows.
    """

    def __init__(self, message: str, *, status: int = 0, engine_message: str = "",
                 timed_out: bool = False) -> None:
        self.message = message
        self.status = status
        #: No answer within the call's deadline (status 0 too).
        self.timed_out = timed_out
        #: The engine's own ``message`` (empty for transport failures).
        self.engine_message = engine_message
        super().__init__(message)

    @property
    def missing(self) -> bool:
        """
        The engine answered 404 (no such container, image or network).
        """
        return self.status == 404

    @property
    def unreachable(self) -> bool:
        """
        There was no answer at all (engine down, socket missing, timeout).
        """
        return self.status == 0


def engine_message(body: bytes) -> str:
    """
    The ``message`` of an engine error body, else its first 200 bytes.
    """
    try:
        return str(json.loads(body)["message"])
    except (ValueError, TypeError, KeyError):
        return body[:200].decode("utf-8", "replace").strip() or "no message"


def status_error(what: str, status: int, body: bytes) -> DockerError:
    """
    The error for a non-2xx answer to ``what`` (``"POST /containers/x/start"``).
    """
    message = engine_message(body)
    return DockerError("The engine answered {} with HTTP {}: {}".format(what, status, message),
                       status=status, engine_message=message)


def describe(error: BaseException) -> str:
    """
    A readable reason for a transport failure; the agent wraps the real
    cause in ``reasons`` lists.
    """
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(describe(r.value) if isinstance(r, Failure) else str(r)
                         for r in reasons)
    return str(error) or error.__class__.__name__
