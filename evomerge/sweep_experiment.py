"""Deprecated path: the sweep experiment lives in `evomerge.sweep.experiment`. Kept importable for one release."""

from evomerge.sweep.experiment import *  # noqa: F401,F403
from evomerge.sweep.experiment import (  # noqa: F401
    ModelSet, Sweep, SweepBlock, SweepExperiment, SweepMethod, load_sweep_experiment, parse_paths,
    sweep_experiment_from_dict,
)
