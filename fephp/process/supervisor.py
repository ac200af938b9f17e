"""What every process fephp supervises shares: the parent-death guard and finding processes by title.

A child of fephp (php-fpm, a worker process) must not outlive it, even when
fephp is SIGKILLed and has no chance to stop it: on Linux the child asks the
kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``), checking
right after that the parent is still the one that started it (it may have
died between fork and prctl).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["death_guard_argv", "die_with_parent", "processes_titled"]

#: PR_SET_PDEATHSIG, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
#: Exit status of a guarded child whose parent was already gone (EX_SOFTWARE).
EXIT_ORPHANED = 70

#: Run before the guarded program is exec'd (same pid): ask Linux to SIGTERM
#: it when fephp dies, then check fephp is still its parent.  php-fpm ends
#: its children on SIGTERM.
_GUARD = (
    "import ctypes,os,sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)}, 0, 0, 0)\n"
    f"if os.getppid() != int(sys.argv[1]): sys.exit({EXIT_ORPHANED})\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def death_guard_argv(argv: list[str]) -> list[str]:
    """*argv* behind the parent-death guard, where Linux provides it; *argv* itself elsewhere.

    For a program that is not Python (php-fpm): a short Python prelude sets
    the guard and execs it, so the pid the parent sees is the program's.
    """
    if not sys.platform.startswith("linux") or not sys.executable:
        return argv
    return [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *argv]


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have *signum* sent to this process when *parent* exits (Linux); exit now if it already has.

    For a Python child of fephp (a worker process), called first thing.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit("fephp: the parent process is gone")


def processes_titled(title: str) -> list[int]:
    """Live (not zombie) processes whose command line, as ``/proc`` shows it, is exactly *title*.

    php-fpm's children retitle themselves ``php-fpm: pool NAME``; fephp names
    each managed pool uniquely, so this finds the children of a pool whose
    master is gone and nothing else on the host.
    """
    wanted = title.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").strip()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline == wanted and state != b"Z":
            found.append(int(entry))
    return found
