"""benchmarks/front_instructions.py's reading of strace's summary, as strace 6 writes it."""

from __future__ import annotations

import sys

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import front_instructions  # noqa: E402

SUMMARY = """\
syscall              calls
---------------- ---------
epoll_wait            2001
sendto                2000
recvfrom              1000
---------------- ---------
total                 5001
"""


def test_the_summary_gives_each_syscall_its_calls_and_leaves_out_the_total() -> None:
    """The header, the rules and the total row are skipped; each syscall row gives its name and count."""
    assert front_instructions.strace_summary(SUMMARY) == {"epoll_wait": 2001, "sendto": 2000, "recvfrom": 1000}
