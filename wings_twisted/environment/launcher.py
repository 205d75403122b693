"""
The launcher every child of the process environment is spawned through
(lifecycle.md §21.4).

The launcher is a few lines of Python run with the daemon's interpreter
(``python -I -S -c ...``) before the real command.  In the child, and before
it execs the command, it: starts a new session (so the whole tree shares one
process group that signals can reach; a PTY child already has one), makes
stderr a copy of stdout when asked (merged pipes), writes its own pid into
each ``cgroup.procs`` file it was given, then drops to the server's gid/uid
(joining a cgroup needs the daemon's privileges) and asks the kernel for a
signal should the daemon die and, for games, sets ``no_new_privs`` (a
set-user-ID program cannot give the game back any privilege).  The game is therefore inside its group from
its first instruction: there is no window in which it, or anything it
forks, runs unlimited.  If any step fails the launcher prints
``wings-twisted: ...`` on stderr and exits 127 without running the command.
"""

from __future__ import annotations

import json
from typing import Sequence

_LAUNCHER = """\
import json, os, sys
spec = json.loads(sys.argv[1])
if spec["pdeathsig"] or spec["nnp"]:
    import ctypes  # before the privilege drop: the stdlib may be unreadable after
try:
    os.setsid()
except OSError:
    pass
try:
    if spec["merge"]:
        os.dup2(1, 2)
    for path in spec["procs"]:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    if spec["gid"] >= 0 or spec["uid"] >= 0:
        os.setgroups([])
    if spec["gid"] >= 0:
        os.setgid(spec["gid"])
    if spec["uid"] >= 0:
        os.setuid(spec["uid"])
    if spec["pdeathsig"]:
        ctypes.CDLL(None).prctl(1, spec["pdeathsig"], 0, 0, 0)
    if spec["nnp"]:
        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    os.execvp(sys.argv[2], sys.argv[2:])
except BaseException as e:
    sys.stderr.write("wings-twisted: cannot start %r: %s\\n" % (sys.argv[2:3], e))
    sys.stderr.flush()
    os._exit(127)
"""


def launcher_argv(python: str, *, procs: Sequence[str] = (), uid: int = -1, gid: int = -1,
                  merge: bool = False, parent_death_signal: int = 0,
                  no_new_privileges: bool = False) -> list[str]:
    """
    The argv prefix that runs the launcher (module docstring) with
    ``python``; append the command to run.  ``parent_death_signal``, when
    set, is what the command receives if the daemon dies
    (``PR_SET_PDEATHSIG``, set after the privilege drop, which clears it).
    ``no_new_privileges`` sets ``PR_SET_NO_NEW_PRIVS``: neither the command
    nor anything it runs can gain privileges (set-user-ID programs, file
    capabilities).
    """
    spec = json.dumps({"procs": list(procs), "uid": uid, "gid": gid, "merge": merge,
                       "pdeathsig": parent_death_signal, "nnp": no_new_privileges})
    return [python, "-I", "-S", "-c", _LAUNCHER, spec]
