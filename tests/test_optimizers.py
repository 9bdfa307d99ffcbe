"""Every optimizer behind the ask/tell interface, on a cheap two-objective problem over a real search space."""

import numpy as np
import optuna
import pytest

from evomerge.errors import ExperimentError
from evomerge.genome import SearchSpace, load_space_spec
from evomerge.search.cma import CMAESOptimizer, Scalarization, normalisation, weight_vectors
from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler, resumed_seed
from evomerge.search.pareto import hypervolume

optuna.logging.set_verbosity(optuna.logging.WARNING)
MODELS = ["/ckpt/a", "/ckpt/b"]


def space(name="method_per_layer"):
    spec = load_space_spec(name, {"layer_groups": {"count": 2}})
    return SearchSpace(spec, base="/ckpt/base", models=MODELS, num_layers=4)


def objectives(sp, values):
    """Two conflicting objectives of the genome's unit vector (a bi-objective sphere problem)."""
    u = np.array([g.to_unit(values[g.name]) for g in sp.genes])
    return [-float(np.sum((u - 0.2) ** 2)), -float(np.sum((u - 0.8) ** 2))]


def make(name, sp, seed, population=6, settings=None):
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed) if name == "cmaes"
                                else build_sampler(name, population, seed, settings or {}, constrained=False))
    if name == "cmaes":
        return study, CMAESOptimizer(study, sp, 2, population, seed, [1, 1], None, settings)
    return study, OptunaOptimizer(name, study, sp, population)


def drive(opt, study, sp, n, fail=()):
    """The runner's protocol, synchronously: ask a generation, finish it in the study, tell in ask order."""
    seen = []
    while len(seen) < n:
        batch = []
        while len(batch) < min(opt.batch_size, n - len(seen)):
            p = opt.ask()
            if p is None:
                break
            sp.check(p.values)
            batch.append(p)
        assert batch, "optimizer stalled"
        for p in batch:
            if p.number in fail:
                study.tell(p.number, state=optuna.trial.TrialState.FAIL)
                opt.tell(p.number, None)
            else:
                y = objectives(sp, p.values)
                p.trial.set_user_attr("result", {"maximised": y, "constraints": []})
                study.tell(p.number, y)
                opt.tell(p.number, y, [])
            seen.append((p.number, p.values))
    return seen


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "random", "cmaes"])
def test_same_seed_same_candidates(name):
    sp = space()
    runs = []
    for _ in range(2):
        study, opt = make(name, sp, seed=3)
        runs.append(drive(opt, study, sp, 14))
    assert runs[0] == runs[1]
    study, opt = make(name, sp, seed=4)
    assert drive(opt, study, sp, 14) != runs[0]


@pytest.mark.parametrize("name", ["nsga2", "cmaes"])
def test_optimizers_improve_on_random_search(name):
    sp = space("ram_per_layer")
    ref = [-float(len(sp.genes))] * 2
    hv = {}
    for opt_name in (name, "random"):
        scores = []
        for seed in range(2):
            study, opt = make(opt_name, sp, seed, population=8)
            drive(opt, study, sp, 96)
            scores.append(hypervolume([t.values for t in study.best_trials], ref))
        hv[opt_name] = np.mean(scores)
    assert hv[name] > hv["random"]


def test_cma_decodes_categorical_genes_and_survives_failures():
    sp = space()
    study, opt = make("cmaes", sp, seed=0, population=4)
    seen = drive(opt, study, sp, 24, fail={1, 5, 9})
    methods = {v["g0.method"] for _, v in seen}
    assert len(methods) > 1 and methods <= set(sp.gene("g0.method").choices)
    assert opt.instances[0].generation >= 1  # failed candidates did not block the generation


def test_cma_replays_after_a_restart():
    sp = space()
    study, opt = make("cmaes", sp, seed=5, population=4)
    drive(opt, study, sp, 10)  # ends mid-generation for some instances
    # what the uninterrupted optimizer asks next
    expected = [opt.ask() for _ in range(3)]
    expected_values = [p.values for p in expected]
    for p in expected:  # these trials died with the process: drop them from the study
        study.tell(p.number, state=optuna.trial.TrialState.FAIL)
    valid = [t for t in study.get_trials() if t.number not in {p.number for p in expected}]
    fresh = CMAESOptimizer(study, sp, 2, 4, 5, [1, 1], None)
    fresh.restore(valid)
    again = [fresh.ask().values for _ in range(3)]
    assert again == expected_values


def test_cma_refuses_to_replay_a_changed_setup():
    sp = space()
    study, opt = make("cmaes", sp, seed=5, population=4)
    drive(opt, study, sp, 8)
    other = CMAESOptimizer(study, sp, 2, 4, 6, [1, 1], None)  # another seed
    with pytest.raises(ExperimentError, match="does not replay"):
        other.restore(study.get_trials())


def test_scalarisation_and_weights():
    ideal, scale = normalisation([[0.2, 0.4], [0.6, 0.1]], 2)
    assert np.allclose(scale, [0.4, 0.3]) and np.allclose(ideal, [1.0, 0.7])
    assert np.allclose(normalisation(None, 3)[0], 1.0)
    w = weight_vectors([2, 1, 1], 4, seed=0)
    assert np.allclose(w[0], [0.5, 0.25, 0.25]) and np.allclose(w.sum(axis=1), 1)
    assert np.allclose(weight_vectors([2, 1, 1], 4, seed=0), w)
    g = Scalarization(np.array([0.5, 0.5]), np.array([1.0, 1.0]), np.array([1.0, 1.0]), rho=0.0)
    assert g([0.8, 0.2]) == pytest.approx(0.4)  # max(0.5*0.2, 0.5*0.8)
    assert g([0.6, 0.6]) < g([0.8, 0.2])  # Chebyshev prefers the balanced point here


def test_unknown_settings_are_errors():
    sp = space()
    study = optuna.create_study(directions=["maximize"])
    with pytest.raises(ExperimentError, match="no setting"):
        CMAESOptimizer(study, sp, 1, 4, 0, [1], None, {"sigma": 0.3})
    with pytest.raises(ExperimentError, match="crossover"):
        build_sampler("nsga2", 8, 0, {"crossover": "nope"}, False)
    with pytest.raises(ExperimentError, match="settings for 'tpe'"):
        build_sampler("tpe", 8, 0, {"bogus": 1}, False)


def test_resumed_runs_reseed_their_sampler():
    assert resumed_seed(7, 0) == 7
    assert resumed_seed(7, 10) != resumed_seed(7, 11) != 7
