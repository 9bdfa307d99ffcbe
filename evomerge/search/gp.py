"""Gaussian-process Bayesian optimisation: Optuna's GPSampler behind the ask/tell interface.

Why Optuna's GPSampler (and not BoTorch's qNEHVI): it is installed with the project's own Optuna, keeps its
whole state in the study (the run's storage) like the other Optuna samplers, and covers what a merge search
needs (optuna 5.1.0, `optuna/samplers/_gp/sampler.py`):
- several objectives: log expected hypervolume improvement (LogEHVI);
- constraints: read from `trial.set_constraint` (the runner's `record_constraints`), LogCEHVI;
- parallel workers: trials still RUNNING (their genome is stored as soon as it is asked) enter the
  acquisition as pending points (qLogEHVI: the objectives at the pending points are fantasised from the
  GP's joint posterior and a new candidate is chosen for the improvement over them), so a batch asked
  before any result returns is a batch of distinct candidates, not one point asked 8 times;
- categorical genes: a categorical distribution gets its own kernel term (0 if the choices are equal, else
  1: no false order between methods) and the acquisition is optimised over its choices exhaustively.
BoTorch is not installed in the project's environment; it was not compared.

What this module adds: the genes of a method that a group did not pick do not change the merge, so they
are written at their midpoint (`canonical_genome`). The GP then sees a parameter vary only where it
matters instead of 80 % noise coordinates (imputation of inactive conditional parameters; Lévesque et al.
2017, as in SMAC), and two genomes that merge identically are one point. Resume: the sampler's only
in-memory state is a cache of kernel parameters (the starting point of the next fit), so a resumed run
rebuilds everything from the study, as the other Optuna samplers do.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping

from evomerge.errors import ExperimentError

if TYPE_CHECKING:
    import optuna

    from evomerge.search.space import SearchSpace

# settings of `optimizer.settings` for `gp` and what they set
GP_SETTINGS = ("n_startup_trials", "deterministic_objective", "preliminary_samples", "local_searches")


def canonical_genome(space: "SearchSpace", values: Mapping[str, Any]) -> dict[str, Any]:
    """The same merge with every gene of an unpicked method at its midpoint (pure; `decode` is unchanged)."""
    out = dict(values)
    for g in space.genes:
        if g.method is not None and g.name in out:
            group = next(gr for gr in space.groups if gr.name == g.group)
            if _method_known(space, group, out) and space.method_of(group, out) != g.method:
                out[g.name] = g.midpoint()
    return out


def _method_known(space: "SearchSpace", group, values: Mapping[str, Any]) -> bool:
    return len(space.method_names) == 1 or f"{group.name}.method" in values


def build_gp_sampler(space: "SearchSpace", seed: int, settings: Mapping[str, Any],
                     constraints_func=None) -> "optuna.samplers.BaseSampler":
    """GPSampler for `space`, with inactive genes canonicalised. Unknown settings are an error."""
    import optuna

    settings = dict(settings)
    unknown = sorted(set(settings) - set(GP_SETTINGS))
    if unknown:
        raise ExperimentError(f"optimizer.settings for 'gp': unknown setting(s) {unknown}; known: {list(GP_SETTINGS)}")
    preliminary = settings.pop("preliminary_samples", None)
    local = settings.pop("local_searches", None)
    cls = _canonical_gp_class()
    with warnings.catch_warnings():  # deterministic_objective is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        extra = {"constraints_func": constraints_func} if constraints_func is not None else {}  # Optuna < 5
        sampler = cls(space, seed=seed, warn_independent_sampling=False, **extra, **settings)
    # How hard the acquisition is optimised: QMC points scored first, then local searches from the best
    # of them. Optuna keeps these as attributes (2048 and 10 in 5.1) without a constructor argument.
    for attr, value, low in (("_n_preliminary_samples", preliminary, 1), ("_n_local_search", local, 2)):
        if value is None:
            continue
        if not hasattr(sampler, attr):
            raise ExperimentError(f"optimizer.settings for 'gp': this Optuna ({optuna.__version__}) has no {attr}; "
                                  f"remove the setting")
        if not isinstance(value, int) or value < low:
            raise ExperimentError(f"optimizer.settings for 'gp': {attr.lstrip('_n')} must be an integer >= {low}")
        setattr(sampler, attr, value)
    return sampler


_CLASS = None


def _canonical_gp_class():
    """GPSampler whose proposals (and start-up draws) leave unpicked methods' genes at their midpoint.
    Defined lazily so importing this module does not import Optuna's GP (torch)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from optuna.samplers import GPSampler

    class CanonicalGPSampler(GPSampler):
        def __init__(self, space: "SearchSpace", **kwargs):
            super().__init__(**kwargs)
            self._space = space

        def sample_relative(self, study, trial, search_space):
            params = super().sample_relative(study, trial, search_space)
            return canonical_genome(self._space, params) if params else params

        def sample_independent(self, study, trial, param_name, param_distribution):
            # genes are suggested group by group, the method gene first (base.suggest_genome)
            gene = self._space.gene(param_name) if param_name in {g.name for g in self._space.genes} else None
            if gene is not None and gene.method is not None:
                group = next(gr for gr in self._space.groups if gr.name == gene.group)
                if _method_known(self._space, group, trial.params) and \
                        self._space.method_of(group, trial.params) != gene.method:
                    return gene.midpoint()
            return super().sample_independent(study, trial, param_name, param_distribution)

    _CLASS = CanonicalGPSampler
    return _CLASS
