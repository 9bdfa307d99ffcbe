"""Deprecated path, kept importable for one release: the search experiment lives in
`evomerge.search.experiment`; the settings it shares with the sweep in `evomerge.scoring.settings`."""

from evomerge.scoring.settings import (  # noqa: F401
    Cache, Generator, Heldout, Objective, ScoredModels, Workers, resolve_paths, with_default_kinds,
)
from evomerge.search.experiment import OPTIMIZERS, Constraints, Cost, Experiment, Fidelity, Optimizer, WarmStart  # noqa: F401
