"""The Gaussian-process optimiser (Optuna's GPSampler) behind ask/tell, and warm starts."""

import json

import numpy as np
import optuna
import pytest

from evomerge.errors import ExperimentError
from evomerge.experiment import Experiment
from evomerge.genome import SearchSpace, load_space_spec
from evomerge.recipe import MergeRecipe
from evomerge.runner import run_search
from evomerge.search.gp import canonical_genome
from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler, record_constraints, resumed_seed
from evomerge.search.warm_start import (WarmCandidate, WarmStartOptimizer, express, pareto_layers, rank_candidates,
                                        reference_candidates)

import search_helpers as sh
from test_optimizers import assert_seeded_and_canonical, drive, objectives, space

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)
# a cheap acquisition optimisation keeps these tests fast; the algorithm is the same
FAST = {"n_startup_trials": 4, "preliminary_samples": 64, "local_searches": 2}


def make_gp(sp, seed, storage=None, n_trials=0, settings=FAST, population=3):
    sampler = build_sampler("gp", population, resumed_seed(seed, n_trials), settings, False, space=sp)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler, storage=storage,
                                study_name="s", load_if_exists=True)
    return study, OptunaOptimizer("gp", study, sp, population)


def test_gp_same_seed_same_candidates_and_canonical_genomes():
    assert_seeded_and_canonical(make_gp, space(), 9)


def test_canonical_genome_keeps_the_merge():
    sp = space()
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = sp.sample(rng)
        canon = canonical_genome(sp, values)
        assert sp.decode(canon).to_dict() == sp.decode(values).to_dict()
        inactive = set(canon) - set(sp.active_genes(values))
        assert inactive and all(canon[g] == sp.gene(g).midpoint() for g in inactive)
        assert all(canon[g] == values[g] for g in sp.active_genes(values))


def test_gp_batch_asks_see_the_pending_candidates(monkeypatch):
    """Asks before any result returns (parallel workers) go to qLogEHVI with the running trials as pending
    points, and give distinct candidates."""
    import optuna._gp.acqf as acqf

    pending_rows = []
    original = acqf.qLogEHVI.__init__

    def spy(self, *args, **kwargs):
        pending_rows.append(len(kwargs["normalized_params_of_running_trials"]))
        original(self, *args, **kwargs)

    monkeypatch.setattr(acqf.qLogEHVI, "__init__", spy)
    sp = space()
    study, opt = make_gp(sp, 0)
    drive(opt, study, sp, 4)  # the start-up draws
    batch = [opt.ask() for _ in range(3)]
    assert pending_rows == [1, 2]  # the first ask saw no running trial (LogEHVI), then 1, then 2
    genomes = [json.dumps(p.values, sort_keys=True) for p in batch]
    assert len(set(genomes)) == 3


def test_gp_reads_constraints(monkeypatch):
    import optuna._gp.acqf as acqf

    used = []
    original = acqf.LogCEHVI.__init__

    def spy(self, *args, **kwargs):
        used.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(acqf.LogCEHVI, "__init__", spy)
    sp = space()
    study, opt = make_gp(sp, 1)
    for _ in range(5):
        p = opt.ask()
        y = objectives(sp, p.values)
        record_constraints(p.trial, [y[0] + 1.0])
        study.tell(p.number, y)
    assert used  # the fifth ask (after 4 start-up trials) used the constrained acquisition


def test_gp_resumes_from_the_storage(tmp_path):
    """A new process builds the sampler again on the same storage (reseeded by the number of trials, as the
    runner does) and goes on from every stored trial; asking continues numbering, nothing is lost."""
    sp = space()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, opt = make_gp(sp, 2, storage=url)
    first = drive(opt, study, sp, 6)
    study2, opt2 = make_gp(sp, 2, storage=url, n_trials=len(study.trials))
    opt2.restore(study2.get_trials())
    more = drive(opt2, study2, sp, 3)
    assert [n for n, _ in more] == [6, 7, 8]
    done = study2.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 9 and [t.params for t in done[:6]] == [v for _, v in first]
    assert all(canonical_genome(sp, v) == v for _, v in more)


def test_gp_settings_are_checked():
    with pytest.raises(ExperimentError, match="unknown setting"):
        build_sampler("gp", 4, 0, {"bogus": 1}, False, space=space())
    with pytest.raises(ExperimentError, match="local_searches|local_search"):
        build_sampler("gp", 4, 0, {"local_searches": 1}, False, space=space())


# -------------------------------------------------------------------------------------------------
# warm starts: pure parts
# -------------------------------------------------------------------------------------------------


def ta_space(spec=sh.TA_WEIGHTS, base="/ckpt/base"):
    return SearchSpace(load_space_spec(spec), base=base, models=["/ckpt/a", "/ckpt/b", "/ckpt/c"],
                       model_names=["coding", "tool_use", "memory"], num_layers=4)


def test_references_as_genomes_where_the_space_can_express_them():
    sp = ta_space()
    cands = reference_candidates(sp)
    assert [c.source for c in cands] == ["reference:base", "reference:coding", "reference:tool_use", "reference:memory"]
    coding = cands[1].genome
    assert coding["g0.task_arithmetic.weight[coding]"] == 1.0 and coding["other.task_arithmetic.weight[memory]"] == 0.0
    rule = sp.decode(coding).rule_for("model.layers.0.mlp.up_proj.weight")
    assert rule.method == "task_arithmetic" and list(rule.parameters["weight"]) == [1.0, 0.0, 0.0]
    # method_per_layer's weights are shared and >= 0.1: no reference is a genome of it
    mpl = SearchSpace(load_space_spec("method_per_layer", {"layer_groups": {"count": 2}}), base="/ckpt/base",
                      models=["/ckpt/a", "/ckpt/b"], num_layers=4)
    assert reference_candidates(mpl) == []


def test_express_refuses_what_the_space_would_merge_differently():
    sp = SearchSpace(load_space_spec("method_per_layer", {"layer_groups": {"count": 2}}), base="/ckpt/base",
                     models=["/ckpt/a", "/ckpt/b"], num_layers=4)

    def recipe(method, **params):
        return MergeRecipe.from_dict({"base": "/ckpt/base", "models": ["/ckpt/a", "/ckpt/b"], "method": method,
                                      "parameters": params})

    genome = express(sp, recipe("ties", density=0.2, **{"lambda": 0.9}))
    assert genome is not None and genome["g0.method"] == "ties" and genome["g0.ties.density"] == 0.2
    assert sp.decode(genome).rule_for("model.layers.3.mlp.up_proj.weight").parameters["lambda"] == 0.9
    assert express(sp, recipe("task_arithmetic", **{"lambda": 0.7})) is None  # lambda is not searched here
    assert express(sp, recipe("ties", density=0.05)) is None  # outside the space's bounds
    assert express(sp, recipe("linear")) is None  # a method the space does not search
    assert express(sp, recipe("ram", epsilon=1.1e-5)) is None  # off the epsilon grid
    assert express(sp, recipe("ram", epsilon=1e-5)) is not None
    other = MergeRecipe.from_dict({"base": "/ckpt/other", "models": ["/ckpt/a", "/ckpt/b"], "method": "ram"})
    assert express(sp, other) is None  # other inputs


def test_ranking_puts_references_first_then_pareto_layers_and_drops_duplicates():
    sp = ta_space()
    refs = reference_candidates(sp)[:1]
    g = {**refs[0].genome}
    a = {**g, "g0.task_arithmetic.weight[coding]": 0.5}
    b = {**g, "g0.task_arithmetic.weight[coding]": 0.25}
    c = {**g, "g0.task_arithmetic.weight[coding]": 0.75}
    run = [WarmCandidate("r#0", a, (0.1, 0.1)), WarmCandidate("r#1", b, (0.5, 0.2)), WarmCandidate("r#2", c, (0.2, 0.5)),
           WarmCandidate("r#3", dict(b), (0.5, 0.2))]
    ranked = rank_candidates([refs, run], sp)
    assert [c.source for c in ranked] == ["reference:base", "r#1", "r#2", "r#0"]
    assert pareto_layers([(1, 1), (0, 0), (2, 0), (0.5, 0.5)]) == [0, 2, 0, 1]


def test_warm_start_optimizer_hands_out_its_candidates_first_and_skips_them_on_resume(tmp_path):
    sp = ta_space()
    cands = reference_candidates(sp)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(directions=["maximize", "maximize"], storage=url, study_name="s",
                                sampler=build_sampler("tpe", 4, 0, {}, False))
    opt = WarmStartOptimizer(OptunaOptimizer("tpe", study, sp, 4), study, sp, cands)
    first = [opt.ask() for _ in range(2)]
    assert [p.values for p in first] == [dict(c.genome) for c in cands[:2]]
    assert [p.trial.user_attrs["warm_start"] for p in first] == ["reference:base", "reference:coding"]
    for p in first:
        study.tell(p.number, [0.0, 0.0])
    # a restart: the two asked are in the study; the other two come next, then the sampler's own
    again = WarmStartOptimizer(OptunaOptimizer("tpe", study, sp, 4), study, sp, cands)
    again.restore(study.get_trials())
    nxt = [again.ask() for _ in range(3)]
    assert [p.trial.user_attrs.get("warm_start") for p in nxt] == ["reference:tool_use", "reference:memory", None]


def test_cmaes_with_warm_start_is_refused(tiny_family, tmp_path):
    with pytest.raises(ExperimentError, match="CMA-ES"):
        Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, optimizer={"name": "cmaes"},
                                                warm_start={"references": True}))


# -------------------------------------------------------------------------------------------------
# warm starts end to end
# -------------------------------------------------------------------------------------------------


def _run(family, tmp_path, name, **overrides):
    exp = Experiment.from_dict(sh.experiment_dict(family, tmp_path, **overrides))
    return run_search(exp, tmp_path / name, suite_factory=sh.suite_factory, progress=False, report=False)


def _trials(run_dir):
    names = optuna.study.get_all_study_names(storage=f"sqlite:///{run_dir / 'study.db'}")
    return optuna.load_study(study_name=names[0], storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()


def test_a_run_starts_from_another_runs_best_trials_answered_by_the_cache(tiny_family, tmp_path):
    cache = {"enabled": True, "dir": str(tmp_path / "cache")}
    common = dict(cache=cache, heldout={"enabled": False}, workers={"kind": "inline", "mode": "sync", "threads": 1})
    first = _run(tiny_family, tmp_path, "a", budget=10, optimizer={"name": "random", "population": 5}, **common)
    done = [t for t in _trials(tmp_path / "a") if t.state.name == "COMPLETE"]
    pts = [t.values for t in done]
    front = {done[i].number for i in range(len(done)) if pareto_layers(pts)[i] == 0}
    second = _run(tiny_family, tmp_path, "b", budget=8, optimizer={"name": "gp", "population": 4, "settings": FAST},
                  warm_start={"from_runs": [str(tmp_path / "a")], "references": True, "limit": 6}, **common)
    assert first.finished == 10 and second.finished == 8
    tb = _trials(tmp_path / "b")
    sources = [t.user_attrs.get("warm_start") for t in tb]
    assert sources[:4] == ["reference:base", "reference:coding", "reference:tool_use", "reference:memory"]
    from_a = [s for s in sources[4:6]]
    assert all(s is not None and s.startswith("run:") for s in from_a)
    assert {int(s.rsplit("#", 1)[1]) for s in from_a} <= front  # the other run's front first
    assert sources[6:] == [None, None]  # then the optimizer's own
    # the warm candidates from run a were answered by the cache (3 suites each) and score as they did there
    by_number = {t.number: t for t in _trials(tmp_path / "a")}
    for t in tb[4:6]:
        assert t.values == by_number[int(t.user_attrs["warm_start"].rsplit("#", 1)[1])].values
    assert second.cache_hits >= 2 * 3


def test_warm_start_from_a_sweep(tiny_family, tmp_path):
    """A sweep's grid points (task arithmetic weights, as the space searches them) start the search."""
    import yaml

    from evomerge.sweep import SweepRunner
    from evomerge.sweep_experiment import sweep_experiment_from_dict

    exp_d = sh.experiment_dict(tiny_family, tmp_path)
    sweep = sweep_experiment_from_dict({
        "name": "grid", "base": exp_d["base"], "models": exp_d["models"], "objectives": exp_d["objectives"],
        "sweep": {"methods": {"TA": {"method": "task_arithmetic", "grid": {"weight": [0.3, 0.6]}}}},
        "workers": {"kind": "inline", "threads": 1}, "cache": {"enabled": False}, "heldout": {"split": "test"},
        "seed": 0})
    SweepRunner(sweep, tmp_path / "sweep", progress=False, suite_factory=sh.suite_factory).run()
    assert yaml.safe_load((tmp_path / "sweep" / "experiment.yaml").read_text())["name"] == "grid"
    _run(tiny_family, tmp_path, "s", budget=3, heldout={"enabled": False}, references=False,
         optimizer={"name": "tpe", "population": 3}, warm_start={"from_sweeps": [str(tmp_path / "sweep")]})
    tb = _trials(tmp_path / "s")
    warm = [t for t in tb if t.user_attrs.get("warm_start")]
    assert len(warm) == 2 and all(t.user_attrs["warm_start"].startswith("sweep:") for t in warm)
    weights = sorted(t.params["g0.task_arithmetic.weight[coding]"] for t in warm)
    assert weights == [0.3, 0.6]
