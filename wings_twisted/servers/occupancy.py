"""
What a server is busy with, as one explicit state machine (api.md §2.9,
lifecycle.md §5 step 1, §17, §18).

States (``Occupancy.state``):

============  ==============================================================
``idle``      nothing owns the server besides its own process
``installing``  an egg install script runs (lifecycle.md §16)
``restoring``   a backup is being restored over the volume (backups.md §8)
``transferring``  the server is being sent to another node (transfers.md §3)
``receiving``   the server is being received from another node (§4)
``deleted``     the server was deleted; terminal
============  ==============================================================

Inputs (verbs) and their edges; any edge not in the table is refused with
``Occupied`` and changes nothing:

========================  ==================  ==============
input                     from                to
========================  ==================  ==============
``begin_install``         ``idle``            ``installing``
``begin_restore``         ``idle``            ``restoring``
``begin_transfer_out``    ``idle``            ``transferring``
``begin_receive``         ``idle``            ``receiving``
``finished``              any busy state      ``idle``
``delete``                any state           ``deleted``
========================  ==================  ==============

``finished`` in ``idle`` or ``deleted`` is a no-op (work that ends after a
deletion must not revive the server).

Every guard reads the machine:

* ``check_power()`` — may a power action run?  Refused while installing,
  restoring, transferring, receiving or deleted, with upstream's texts for
  the first three (they reach admins as ``daemon error``).
* ``check_writable()`` — may files change (the write guard, api.md §2.9)?
  Refused while restoring or receiving, with the 409 texts of the spec;
  reads are always allowed.

Decision: power is also refused while a transfer is received (upstream has
no such state; the incoming server does not run until it is registered) and
after deletion.
"""

from __future__ import annotations

from typing import Final, Literal

from .power import ServerBusy

State = Literal["idle", "installing", "restoring", "transferring", "receiving", "deleted"]
Input = Literal["begin_install", "begin_restore", "begin_transfer_out", "begin_receive",
                "finished", "delete"]

IDLE: Final = "idle"
BUSY_STATES: Final[tuple[State, ...]] = ("installing", "restoring", "transferring", "receiving")
ALL_STATES: Final[tuple[State, ...]] = ("idle", *BUSY_STATES, "deleted")

#: The edges of the machine (see the module docstring).
TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    ("idle", "begin_install"): "installing",
    ("idle", "begin_restore"): "restoring",
    ("idle", "begin_transfer_out"): "transferring",
    ("idle", "begin_receive"): "receiving",
    **{(busy, "finished"): "idle" for busy in BUSY_STATES},
    **{(state, "delete"): "deleted" for state in ALL_STATES},
}

RESTORING_MESSAGE = "Files cannot be changed while a backup is being restored to this server."
RECEIVING_MESSAGE = "Files cannot be changed while this server is being transferred to this node."

#: Why a power action is refused in each busy state (lifecycle.md §5 step 1).
POWER_REFUSALS: Final[dict[State, str]] = {
    "installing": "server is currently installing",
    "transferring": "server is currently being transferred",
    "restoring": "server is currently being restored",
    "receiving": "server is currently being transferred",
    "deleted": "server has been deleted",
}


class Occupied(Exception):
    """
    An input the current state does not accept; ``state`` is that state.
    """

    def __init__(self, state: State, attempted: Input) -> None:
        super().__init__("server is {}: cannot {}".format(state, attempted.replace("_", " ")))
        self.state = state
        self.attempted = attempted


class WriteGuarded(Exception):
    """
    The write guard of api.md §2.9 refuses a modification (409).
    """


class Occupancy:
    """
    The occupancy machine of one server.  Reactor thread only; the guards
    may also be read from worker threads (a read of one attribute).
    """

    def __init__(self) -> None:
        self._state: State = "idle"

    @property
    def state(self) -> State:
        """
        The current state.
        """
        return self._state

    def _input(self, name: Input) -> None:
        target = TRANSITIONS.get((self._state, name))
        if target is None:
            raise Occupied(self._state, name)
        self._state = target

    # -- inputs ------------------------------------------------------------------------------

    def begin_install(self) -> None:
        """
        An install script is about to run.
        """
        self._input("begin_install")

    def begin_restore(self) -> None:
        """
        A backup restore is about to write over the volume.
        """
        self._input("begin_restore")

    def begin_transfer_out(self) -> None:
        """
        The server is about to be archived and sent to another node.
        """
        self._input("begin_transfer_out")

    def begin_receive(self) -> None:
        """
        The server's files are about to arrive from another node.
        """
        self._input("begin_receive")

    def finished(self) -> None:
        """
        Whatever kept the server busy has ended (successfully or not).
        """
        if self._state in BUSY_STATES:
            self._state = "idle"

    def delete(self) -> None:
        """
        The server was deleted (terminal).
        """
        self._input("delete")

    # -- questions ---------------------------------------------------------------------------

    @property
    def installing(self) -> bool:
        """
        Whether an install runs.
        """
        return self._state == "installing"

    @property
    def transferring(self) -> bool:
        """
        Whether the server is being sent to another node.
        """
        return self._state == "transferring"

    @property
    def deleted(self) -> bool:
        """
        Whether the server was deleted.
        """
        return self._state == "deleted"

    def check_power(self) -> None:
        """
        Raise ``ServerBusy`` unless a power action may run.
        """
        refusal = POWER_REFUSALS.get(self._state)
        if refusal is not None:
            raise ServerBusy(refusal)

    def check_writable(self) -> None:
        """
        Raise ``WriteGuarded`` while a restore or an incoming transfer owns
        the volume (api.md §2.9).
        """
        if self._state == "restoring":
            raise WriteGuarded(RESTORING_MESSAGE)
        if self._state == "receiving":
            raise WriteGuarded(RECEIVING_MESSAGE)
