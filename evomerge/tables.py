"""Deprecated path: the sweep's tables live in `evomerge.report.tables`. Kept importable for one release."""

from evomerge.report.tables import *  # noqa: F401,F403
from evomerge.report.tables import ROW_KINDS, Score, TableBlock, TableRow, average, csv_header, percent, to_csv, \
    to_markdown, write_tables  # noqa: F401
