"""
A tiny console "game server" for trying the daemon without Docker or a real
game: ``python3 -m wings_twisted.devpanel.examplegame [--players N] [--done TEXT]``.

It prints a few boot lines and then the done-string (``Server is ready`` by
default, what the development Panel's eggs wait for), then reads commands
line by line from stdin and answers on stdout:

==================  =====================================================
``list``/``players`` ``There are 0 of a max of N players online.``
``say TEXT``         ``[Server] TEXT``
``help``             the command list
``stop``             a shutdown line, exit status 0
``crash``            a crash line on stderr, exit status 1
``flood N``          N numbered 100-byte lines, as fast as possible
``pace RATE SECS``   RATE 100-byte lines a second for SECS seconds, each
                     carrying the wall-clock time it was written (the
                     console benchmark measures latency with it)
anything else        ``Unknown command: …``
==================  =====================================================

Every command is first echoed as ``> command``.  End of input, SIGTERM and
SIGINT shut down cleanly with status 0.  Output is flushed line by line.
Standard library only; ``SERVER_IP``/``SERVER_PORT`` from the environment
show up in the boot lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Sequence, TextIO

DEFAULT_DONE = "Server is ready"


class _Shutdown(Exception):
    """
    Raised from the signal handler to leave the read loop.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class ExampleGame:
    """
    The command interpreter; ``out``/``err`` are text streams.
    """

    def __init__(self, max_players: int, out: TextIO, err: TextIO) -> None:
        self.max_players = max_players
        self._out = out
        self._err = err

    def say(self, line: str, stream: TextIO | None = None) -> None:
        """
        Write one line and flush it at once.
        """
        target = stream or self._out
        target.write(line + "\n")
        target.flush()

    def boot(self, done: str, address: str) -> None:
        """
        The boot banner, ending with the done-string.
        """
        self.say("[Boot] Example game server starting (pid {})".format(os.getpid()))
        self.say("[Boot] Loading world 'example'...")
        self.say("[Boot] Pretending to listen on {} for up to {} players".format(address, self.max_players))
        self.say(done)

    def handle(self, command: str) -> int | None:
        """
        Run one command; returns an exit status when the game should end.
        """
        self.say("> " + command)
        word, _, rest = command.strip().partition(" ")
        word = word.lower()
        if word in ("list", "players"):
            self.say("There are 0 of a max of {} players online.".format(self.max_players))
        elif word == "say":
            self.say("[Server] " + rest)
        elif word == "help":
            self.say("Commands: list, players, say <text>, flood <n>, pace <rate> <secs>, "
                     "stop, crash, help")
        elif word == "flood":
            self.flood(_number(rest.split()[:1], 1000))
        elif word == "pace":
            words = rest.split()
            self.pace(_number(words[:1], 100), _number(words[1:2], 1))
        elif word == "stop":
            self.say("[Server] Stopping the server... Goodbye!")
            return 0
        elif word == "crash":
            self.say("[Server] Simulated crash!", self._err)
            return 1
        elif word:
            self.say("Unknown command: {}. Type \"help\" for help.".format(word))
        return None


    def flood(self, count: int) -> None:
        """
        ``count`` numbered lines of 100 bytes each, written in large batches.
        """
        batch: list[str] = []
        for n in range(count):
            batch.append("flood {:08d} ".format(n).ljust(99, "x") + "\n")
            if len(batch) == 512:
                self._out.write("".join(batch))
                batch = []
        self._out.write("".join(batch))
        self.say("flood done")

    def pace(self, rate: int, seconds: float) -> None:
        """
        ``rate`` lines a second for ``seconds``: ``pace <seq> <unix time>``
        padded to 100 bytes, each flushed as it is written.
        """
        rate = max(1, rate)
        total = int(rate * seconds)
        start = time.time()
        for n in range(total):
            due = start + n / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            self.say("pace {:08d} {:.6f} ".format(n, time.time()).ljust(99, "x"))
        self.say("pace done")


def _number(words: Sequence[str], default: int) -> int:
    try:
        return max(0, int(words[0])) if words else default
    except ValueError:
        return default


def _raise_shutdown(signum: int, frame: object) -> None:
    raise _Shutdown(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Boot, then serve commands from stdin until ``stop``, ``crash``, end of
    input or a termination signal.
    """
    parser = argparse.ArgumentParser(prog="python3 -m wings_twisted.devpanel.examplegame", description=__doc__.splitlines()[1])
    parser.add_argument("--players", type=int, default=20, help="max players shown by 'list'")
    parser.add_argument("--done", default=DEFAULT_DONE, help="line printed when booted (default: %(default)r)")
    parser.add_argument("--boot-delay", type=float, default=0.0, help="seconds to wait before the done-string")
    args = parser.parse_args(argv)
    game = ExampleGame(args.players, sys.stdout, sys.stderr)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    address = "{}:{}".format(os.environ.get("SERVER_IP", "0.0.0.0"), os.environ.get("SERVER_PORT", "25565"))
    try:
        if args.boot_delay > 0:
            game.say("[Boot] Warming up for {}s".format(args.boot_delay))
            time.sleep(args.boot_delay)
        game.boot(args.done, address)
        while True:
            raw = sys.stdin.buffer.readline()
            if not raw:
                game.say("[Server] Console input closed, shutting down.")
                return 0
            status = game.handle(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if status is not None:
                return status
    except _Shutdown as e:
        game.say("[Server] Received {}, shutting down.".format(e.name))
        return 0
    except BrokenPipeError:
        # Nobody is reading our console any more; nothing left to say.
        return 0


if __name__ == "__main__":
    sys.exit(main())
