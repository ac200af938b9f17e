"""``fephp bench``: an open-loop HTTP load generator with HDR percentiles.

:mod:`.schedule` is the arithmetic of send times, :mod:`.client` a lean
HTTP/1.1 keep-alive client, :mod:`.report` the histograms and reports, and
:mod:`.runner` wires them to an injected reactor.
"""

from .report import ErrorKind, LatencySummary, Report
from .runner import BenchConfig, BenchRun
from .schedule import Schedule

__all__ = ["BenchConfig", "BenchRun", "ErrorKind", "LatencySummary", "Report", "Schedule"]
