"""Report: one self-contained ``report.html`` per work folder, the worst cases first."""

from unet3d.report.build import REPORT, ReportOptions, evaluation_report, write_reports

__all__ = ["REPORT", "ReportOptions", "evaluation_report", "write_reports"]
