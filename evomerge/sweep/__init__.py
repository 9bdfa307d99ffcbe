"""`evomerge sweep`: grid expansion over merge methods, scored through the same layer as the search.

experiment.py: the sweep YAML and its model sets; grid.py: the points and the choice of the best;
run.py: the run; state.py: sweep.json as typed values; outputs.py: grid.csv and the held-out table.
"""

from evomerge.sweep.grid import GridPoint, choose_best, describe, expand_grid, thin
from evomerge.sweep.run import RESUMABLE_CHANGES, SweepRunner, SweepSummary, run_sweep

__all__ = ["GridPoint", "RESUMABLE_CHANGES", "SweepRunner", "SweepSummary", "choose_best", "describe", "expand_grid",
           "run_sweep", "thin"]
