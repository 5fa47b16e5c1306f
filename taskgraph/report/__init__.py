"""Reports of a finished study: compute a frozen :class:`ReportData` first, then render it.

- :func:`build_report`: storage → :class:`ReportData` (best configuration, Pareto front,
  per-task table against single-task and all-in-one, groupings, trials).
- :func:`write_report`: :class:`ReportData` → a folder with ``report.md`` and PNG pictures.
"""

from taskgraph.report.data import ReportData, TrialRow, build_report
from taskgraph.report.markdown import write_report

__all__ = ["ReportData", "TrialRow", "build_report", "write_report"]
