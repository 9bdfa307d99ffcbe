"""`optimizer: additive`: Thompson sampling from an additive Bayesian model, behind ask/tell."""

import numpy as np
import optuna
import pytest

from evomerge.errors import ExperimentError
from evomerge.genome import SearchSpace, load_space_spec
from evomerge.search.additive import (AdditiveOptimizer, _Features, _rff_gram, check_settings, encode, fit, layout,
                                      merge_key, posterior_weights)
from evomerge.search.gp import canonical_genome

from test_optimizers import MODELS, assert_seeded_and_canonical, drive, finish, space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make(sp, seed, storage=None, population=4, settings=None, n_obj=2):
    study = optuna.create_study(directions=["maximize"] * n_obj, sampler=optuna.samplers.RandomSampler(seed=seed),
                                storage=storage, study_name="s", load_if_exists=True)
    return study, AdditiveOptimizer(study, sp, n_obj, population, seed, {"n_startup_trials": 4, **(settings or {})})


def test_same_seed_same_candidates_other_seed_others_and_genomes_canonical():
    assert_seeded_and_canonical(make, space(), 14)


def test_the_compact_feature_gram_equals_the_dense_one():
    """Groups mixing methods, a method without searched genes (RAM's grid epsilon has one): the same matrix."""
    spec = load_space_spec("method_per_layer", {"layer_groups": {"count": 3}})
    sp = SearchSpace(spec, base="/ckpt/base", models=MODELS, num_layers=6)
    rng = np.random.default_rng(1)
    lay = layout(sp)
    rows = [encode(sp, lay, canonical_genome(sp, sp.sample(rng))) for _ in range(30)]
    idx = np.stack([r[0] for r in rows])
    units = [[np.stack([r[1][g][m] for r in rows]) for m in range(len(lay.methods))] for g in range(len(lay.groups))]
    features = _Features(lay, 8, 0)
    _, rff = features.matrices(idx, units, 0.3)
    assert np.allclose(_rff_gram(rff, idx, features), rff @ rff.T, rtol=0, atol=1e-12)


def test_model_proposals_follow_the_start_up_draws():
    sp = space()
    study, opt = make(sp, 0)
    drive(opt, study, sp, 12)
    how = [t.user_attrs["additive"] for t in study.trials]
    assert how[:4] == ["random"] * 4 and set(how[4:]) == {"thompson"}


def test_a_batch_asked_before_any_result_is_a_batch_of_distinct_merges():
    sp = space()
    study, opt = make(sp, 1, population=8)
    drive(opt, study, sp, 8)
    batch = [opt.ask() for _ in range(8)]  # parallel workers: nothing told in between
    assert {p.trial.user_attrs["additive"] for p in batch} == {"thompson"}
    keys = {merge_key(sp, p.values) for p in batch} | {merge_key(sp, t.params) for t in study.trials[:8]}
    assert len(keys) == 16


def test_resume_from_the_storage_continues_as_if_uninterrupted(tmp_path):
    """Draws depend on (seed, trial number) and the model on the study only: a new process on the same storage
    proposes exactly what the uninterrupted run proposed."""
    sp = space()
    study, opt = make(sp, 2)
    straight = drive(opt, study, sp, 12)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study1, opt1 = make(sp, 2, storage=url)
    first = drive(opt1, study1, sp, 8)
    study2, opt2 = make(sp, 2, storage=url)
    opt2.restore(study2.get_trials())
    more = drive(opt2, study2, sp, 4)
    assert [n for n, _ in more] == [8, 9, 10, 11]
    assert first + more == straight


def drive_async(opt, study, sp, n):
    """One worker in async mode: ask one, finish it, ask the next (the model is refitted before every ask)."""
    seen = []
    while len(study.trials) < n:
        p = opt.ask()
        finish(opt, study, sp, p)
        seen.append((p.number, p.values))
    return seen


def test_async_refits_search_hyperparameters_once_per_batch_and_resume_alike(tmp_path):
    sp = space()
    study, opt = make(sp, 6)
    straight = drive_async(opt, study, sp, 14)
    prefixes = sorted(len(k) for k in opt._hyper)
    assert prefixes == [4, 8, 12]  # trials 5-7 reuse the grid choice made on the first 4, 9-11 on the first 8
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study1, opt1 = make(sp, 6, storage=url)
    drive_async(opt1, study1, sp, 9)
    study2, opt2 = make(sp, 6, storage=url)
    opt2.restore(study2.get_trials())
    drive_async(opt2, study2, sp, 14)
    assert [t.params for t in study2.trials] == [v for _, v in straight]


def test_the_model_recovers_an_additive_response_and_learns_the_method():
    """A response that is a sum over groups (ties best everywhere, its density best at 0.8): the posterior mean
    predicts unseen genomes, and proposals pick ties with a density near 0.8."""
    spec = load_space_spec("method_per_layer", {"layer_groups": {"count": 4}})
    sp = SearchSpace(spec, base="/ckpt/base", models=MODELS, num_layers=8)

    def response(values):
        total = 0.0
        for group in sp.groups:
            method = sp.method_of(group, values)
            if method == "ties":
                total += 1.0 - (sp.gene(f"{group.name}.ties.density").to_unit(values[f"{group.name}.ties.density"]) - 0.8) ** 2
            elif method == "ram":
                total += 0.3
        return total

    rng = np.random.default_rng(0)
    genomes = [canonical_genome(sp, sp.sample(rng)) for _ in range(120)]
    lay = layout(sp)
    rows = [encode(sp, lay, v) for v in genomes]
    idx = np.stack([r[0] for r in rows])
    units = [[np.stack([r[1][g][m] for r in rows]) for m in range(len(lay.methods))] for g in range(len(lay.groups))]
    y = np.array([[response(v)] for v in genomes])
    features = _Features(lay, 32, 0)
    f = fit(features, idx[:100], [[u[:100] for u in g] for g in units], y[:100])
    w = posterior_weights(f, rng, mean_only=True)
    const, rff = features.matrices(idx[100:], [[u[100:] for u in g] for g in units], f.length)
    phi = np.concatenate([np.sqrt(f.c) * const, np.sqrt(1 - f.c) * rff], axis=1)
    pred = f.mean + f.scale * (phi @ w)[:, 0]
    truth = y[100:, 0]
    r2 = 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.9

    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    opt = AdditiveOptimizer(study, sp, 1, 4, 0, {"n_startup_trials": 8})
    seen = []
    while len(seen) < 40:
        batch = [opt.ask() for _ in range(4)]
        for p in batch:
            value = response(p.values)
            p.trial.set_user_attr("result", {"maximised": [value], "constraints": []})
            study.tell(p.number, [value])
            seen.append(p.values)
    last = seen[-8:]
    picks = [v[f"{g.name}.method"] for v in last for g in sp.groups]
    assert picks.count("ties") >= 0.8 * len(picks)
    dens = [sp.gene(f"{g.name}.ties.density").to_unit(v[f"{g.name}.ties.density"])
            for v in last for g in sp.groups if v[f"{g.name}.method"] == "ties"]
    assert abs(float(np.median(dens)) - 0.8) < 0.15


def test_constraints_steer_proposals_to_feasible_merges():
    """Objectives that do not depend on g0's method, a constraint violated whenever g0 uses RAM: once trials
    are infeasible, proposals avoid RAM in g0 far more often than the 1 in 5 of random draws."""
    sp = space()
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    opt = AdditiveOptimizer(study, sp, 2, 4, 0, {"n_startup_trials": 12})
    proposals = []
    while len(proposals) < 48:
        for p in [opt.ask() for _ in range(4)]:
            u = sp.gene("g1.ties.density").to_unit(p.values["g1.ties.density"])
            y = [u, 1 - u]
            c = [1.0 if p.values["g0.method"] == "ram" else -1.0]
            p.trial.set_user_attr("result", {"maximised": y, "constraints": c})
            study.tell(p.number, y)
            proposals.append(p)
    assert opt._model([t for t in study.trials])["infeasible"] > 0
    late = [p.values["g0.method"] for p in proposals[24:]]
    assert late.count("ram") <= 2


def test_failed_trials_are_skipped_and_settings_are_checked():
    sp = space()
    study, opt = make(sp, 0)
    seen = drive(opt, study, sp, 12, fail={1, 5, 9})
    assert len(seen) == 12
    with pytest.raises(ExperimentError, match="unknown setting"):
        check_settings({"bogus": 1})
    with pytest.raises(ExperimentError, match="features"):
        check_settings({"features": 0})
    with pytest.raises(ExperimentError, match="greedy"):
        check_settings({"greedy": 2})
    assert check_settings({})["greedy"] == 0.75


def test_single_method_space():
    sp = space("ram_per_layer")
    study, opt = make(sp, 0)
    seen = drive(opt, study, sp, 12)
    assert len({merge_key(sp, v) for _, v in seen}) == 12


def test_experiment_accepts_additive(tiny_family, tmp_path):
    import search_helpers as sh
    from evomerge.experiment import Experiment
    from evomerge.runner import run_search

    exp = Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, budget=8, heldout={"enabled": False},
                                                  optimizer={"name": "additive", "population": 4,
                                                             "settings": {"n_startup_trials": 4}},
                                                  warm_start={"references": True, "limit": 2}))
    summary = run_search(exp, tmp_path / "run", suite_factory=sh.suite_factory, progress=False, report=False)
    assert summary.finished == 8
    with pytest.raises(ExperimentError, match="unknown setting"):
        bad = Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, optimizer={"name": "additive",
                                                                                        "settings": {"x": 1}}))
        run_search(bad, tmp_path / "bad", suite_factory=sh.suite_factory, progress=False, report=False)


def test_additive_is_the_default_optimizer_with_batches_of_8():
    from evomerge.search.experiment import Optimizer

    assert Optimizer().name == "additive" and Optimizer().population == 8
    assert Optimizer(name="nsga2").population == 16 and Optimizer(name="additive", population=4).population == 4


def test_a_run_started_with_the_old_default_resumes_from_a_yaml_without_optimizer(tiny_family, tmp_path):
    """Runs started before the default became `additive` stored `optimizer: nsga2`; resuming them with the same
    YAML (no `optimizer:` key) keeps NSGA-II instead of refusing the run or switching optimizers mid-study.
    An optimizer the YAML names explicitly is still compared (and refused when it differs)."""
    import search_helpers as sh
    from evomerge.experiment import Experiment
    from evomerge.runner import run_search

    run = tmp_path / "run"
    started = sh.experiment_dict(tiny_family, tmp_path, budget=6, heldout={"enabled": False},
                                 optimizer={"name": "nsga2", "population": 6})
    run_search(Experiment.from_dict(started), run, suite_factory=sh.suite_factory, progress=False, report=False)
    unset = {k: v for k, v in started.items() if k != "optimizer"}
    unset["budget"] = 9
    assert Experiment.from_dict(unset).optimizer.name == "additive"
    summary = run_search(Experiment.from_dict(unset), run, resume=True, suite_factory=sh.suite_factory,
                         progress=False, report=False)
    assert summary.finished == 9
    assert "name: nsga2" in (run / "experiment.yaml").read_text()
    named = dict(unset, optimizer={"name": "additive"}, budget=10)
    with pytest.raises(ExperimentError, match="optimizer"):
        run_search(Experiment.from_dict(named), run, resume=True, suite_factory=sh.suite_factory,
                   progress=False, report=False)
