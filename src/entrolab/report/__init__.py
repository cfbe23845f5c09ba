"""Run reports and comparison pages: matplotlib (Agg) plots and self-contained HTML.

``html.Page`` is the reusable page builder; :func:`write_run_report` renders one run directory and
:func:`write_comparison` several (see docs/evaluation.md).
"""

from entrolab.report.compare import write_comparison
from entrolab.report.html import Page
from entrolab.report.run_report import write_run_report

__all__ = ["Page", "write_comparison", "write_run_report"]
