"""What a search run looks like: the report reads a run directory (the run record written by the loop,
evomerge.search.record) and draws it: PNG plots and a self-contained report.html. It writes nothing
else, so it can be regenerated at any time, also for a run that is still going or was killed.

reading.py: the run directory as a `RunData`; plots.py: the PNGs; html.py: report.html; tables.py: the
sweep's markdown / CSV tables.
"""

from __future__ import annotations

from pathlib import Path

from evomerge.io.atomic import write_bytes_atomic, write_text_atomic
from evomerge.report.html import build_html
from evomerge.report.plots import PLOTS, plot_front, plot_front_genes, plot_hypervolume
from evomerge.report.reading import RunData, load_run
# Deprecated here (kept for one release): the run record's formats belong to the loop that writes them.
from evomerge.search.record import evaluations_per_rung, front_member, result_of, trial_header, trial_row, \
    write_front_json  # noqa: F401

__all__ = ["PLOTS", "RunData", "build_html", "load_run", "plot_front", "plot_front_genes", "plot_hypervolume",
           "write_report"]


def write_report(run_dir: str | Path) -> Path:
    """The PNG plots and report.html, from what the run directory holds (it only reads the run record)."""
    run = load_run(run_dir)
    images = {"front": plot_front(run), "hypervolume": plot_hypervolume(run), "genes": plot_front_genes(run)}
    for key, data in images.items():
        write_bytes_atomic(run.dir / PLOTS[key], data)
    out = run.dir / "report.html"
    write_text_atomic(out, build_html(run, images))
    return out
