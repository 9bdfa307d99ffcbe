"""Every optimizer behind the ask/tell interface, on a cheap two-objective problem over a real search space."""

import numpy as np
import optuna
import pytest

from evomerge.errors import ExperimentError
from evomerge.search.space import SearchSpace
from evomerge.search.space_spec import load_space_spec
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


def finish(opt, study, sp, p, fail=()):
    """What the runner does when a candidate finishes: fail it, or store and tell its objectives."""
    if p.number in fail:
        study.tell(p.number, state=optuna.trial.TrialState.FAIL)
        opt.tell(p.number, None)
    else:
        y = objectives(sp, p.values)
        p.trial.set_user_attr("result", {"maximised": y, "constraints": []})
        study.tell(p.number, y)
        opt.tell(p.number, y, [])


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
            finish(opt, study, sp, p, fail)
            seen.append((p.number, p.values))
    return seen


def assert_seeded_and_canonical(make, sp, n):
    """For a model-based optimizer over the method_per_layer space (`make(sp, seed)` -> (study, optimizer)): the
    same seed proposes the same candidates and another seed others; start-up draws and model proposals alike
    leave unpicked methods' genes at their midpoint (canonical genomes), and the categorical method gene is
    searched. Returns the first run."""
    from evomerge.search.gp import canonical_genome

    runs = []
    for seed in (3, 3, 4):
        study, opt = make(sp, seed)
        runs.append(drive(opt, study, sp, n))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    for _, values in runs[0]:
        assert canonical_genome(sp, values) == values
        sp.check(values)
    assert len({v["g0.method"] for _, v in runs[0]}) > 1
    return runs[0]


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


# -- CMA-ES: categorical distributions, pooled learning, initial design ---------------------------------

def cma_space():
    """method_per_layer with 2 layer groups: 3 categorical method genes of 5 options, and their parameters."""
    return space()


def async_drive(opt, study, sp, n, seed, fail=()):
    """Asks and tells interleaved, results coming back in a seeded random order (as async workers deliver
    them); returns the proposals still running at the end and every told (number, values)."""
    rng = np.random.default_rng(seed)
    running, told = [], []
    while len(told) < n:
        for _ in range(int(rng.integers(1, 4))):
            p = opt.ask()
            if p is None:
                break
            running.append(p)
        assert running, "optimizer stalled"
        for p in [running[i] for i in sorted(rng.choice(len(running), int(rng.integers(1, len(running) + 1)),
                                                        replace=False))][::-1]:
            running.remove(p)
            finish(opt, study, sp, p, fail)
            told.append((p.number, p.values))
    return running, told


def next_asks(opt, count):
    return [opt.ask() for _ in range(count)]


def described(proposals, renumber=None):
    """Values and optimizer bookkeeping of proposals (trial numbers in the bookkeeping mapped by renumber)."""
    renumber = renumber or {}
    out = []
    for p in proposals:
        if p is None:
            out.append(None)
            continue
        attrs = dict(p.attrs)
        if attrs.get("cma_injected") is not None:
            attrs["cma_injected"] = renumber.get(attrs["cma_injected"], attrs["cma_injected"])
        if "cma_learned" in attrs:
            attrs["cma_learned"] = sorted(renumber.get(n, n) for n in attrs["cma_learned"])
        out.append((p.values, attrs))
    return out


@pytest.mark.parametrize("settings", [{}, {"initial_design": 5}, {"categorical": "scores"}, {"share": False}])
def test_cma_replays_an_async_run_exactly(settings):
    """Results arriving out of order, trials still running at the crash, and enqueued trials that never
    started: a fresh optimizer restored from the study asks exactly what the uninterrupted one asks,
    including every categorical step (learned from other instances' trials) and the design."""
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=7, population=4, settings=settings)
    running, _ = async_drive(opt, study, sp, 30, seed=1, fail={4, 17})
    assert running  # some trials are still running when the process dies
    if "categorical" not in settings and settings.get("share", True):
        learned = {n for inst in opt.instances for n in inst.learned}
        assert len({opt._archive[n][0] for n in learned}) >= 2  # steps learned from several instances' trials
    expected = next_asks(opt, 4)  # enqueued before the crash, never started: dropped from the study
    dead = [p.number for p in expected if p is not None]
    for number in dead:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    valid = [t for t in study.get_trials() if t.number not in dead]
    fresh = CMAESOptimizer(study, sp, 2, 4, 7, [1, 1], None, settings)
    fresh.restore(valid)
    again = next_asks(fresh, 4)
    assert described(again) == described(expected)
    # the running trials and the re-asked ones finish alike on both sides; both go on the same way
    renumber = {e.number: a.number for e, a in zip(expected, again) if e is not None}
    for p in running:
        y = objectives(sp, p.values)
        study.tell(p.number, y)
        opt.tell(p.number, y, [])
        fresh.tell(p.number, y, [])
    for e, a in zip(expected, again):
        if e is not None:
            y = objectives(sp, e.values)
            study.tell(a.number, y)
            opt.tell(e.number, y, [])
            fresh.tell(a.number, y, [])
    later_expected, later_again = next_asks(opt, 6), next_asks(fresh, 6)
    assert sum(p is not None for p in later_expected) >= 4
    assert described(later_again) == described(later_expected, renumber)


def test_cma_share_false_learns_only_from_its_own_trials():
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=3, population=4, settings={"share": False})
    drive(opt, study, sp, 40)
    for inst in opt.instances:
        assert inst.learned and {opt._archive[n][0] for n in inst.learned} == {inst.index}
    study, opt = make("cmaes", sp, seed=3, population=4)
    drive(opt, study, sp, 40)
    for inst in opt.instances:
        assert {opt._archive[n][0] for n in inst.learned} == {0, 1}


def test_cma_refuses_to_resume_a_run_of_the_other_categorical_mode():
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=5, population=4, settings={"categorical": "scores"})
    drive(opt, study, sp, 8)
    other = CMAESOptimizer(study, sp, 2, 4, 5, [1, 1], None)  # default: categorical distributions
    with pytest.raises(ExperimentError, match="categorical: scores"):
        other.restore(study.get_trials())


def test_cma_initial_design_is_evaluated_first_and_starts_the_instances():
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=2, population=4, settings={"initial_design": 6})
    first = [opt.ask() for _ in range(7)]
    assert all(p is not None for p in first[:6]) and first[6] is None  # the instances wait for the design
    assert [p.attrs["cma_design"] for p in first[:6]] == list(range(6))
    for p in first[:6]:
        y = objectives(sp, p.values)
        study.tell(p.number, y)
        opt.tell(p.number, y, [])
    p = opt.ask()
    assert p.attrs["cma_instance"] == 0 and sorted(p.attrs["cma_learned"]) == [q.number for q in first[:6]]


def test_cma_categorical_genes_follow_distributions_with_a_margin():
    """Every categorical gene is drawn from a distribution that moves towards the options of the better
    candidates and never drops an option below CatCMA's margin."""
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=0, population=6)
    method = sp.gene("g0.method")

    def prefers_ties(_sp, values):  # both objectives reward g0 using TIES, nothing else matters
        v = 1.0 if values["g0.method"] == "ties" else 0.0
        return [v, v]

    seen = []
    for _ in range(8):
        batch = [p for p in (opt.ask() for _ in range(opt.batch_size)) if p is not None]
        for p in batch:
            y = prefers_ties(sp, p.values)
            study.tell(p.number, y)
            opt.tell(p.number, y, [])
            seen.append(p.values["g0.method"])
    for inst in opt.instances:
        q = inst.cats.q[0]
        assert q.argmax() == method.choices.index("ties") and q.max() > 0.8
        assert np.all(q >= inst.cats.margin[0] - 1e-12) and q.sum() == pytest.approx(1)
        assert all(np.all(qq >= m - 1e-12) for qq, m in zip(inst.cats.q, inst.cats.margin))
    late = seen[len(seen) // 2:]
    assert late.count("ties") > 0.6 * len(late) and len(set(seen)) == len(method.choices)


def test_categorical_distributions_update_and_stratified_sampling():
    from evomerge.search.cma import FAILED, CategoricalDistributions

    cats = CategoricalDistributions([3, 2])
    options = [[2, 0], [2, 1], [0, 1], [1, 0]]
    assert cats.update(options, [0.1, 0.2, 0.3, 0.4], [1.0] * 4)  # the better half both chose option 2
    assert cats.q[0].argmax() == 2 and cats.q[0][:2] == pytest.approx([cats.margin[0]] * 2)
    w = np.log(2.5) - np.log([1, 2])  # CMA-ES log-rank weights of the better half (4 candidates)
    assert cats.q[1] == pytest.approx(w / w.sum())  # the weighted frequencies: the best one's option 0 leads
    before = [q.copy() for q in cats.q]
    assert not cats.update([[0, 0], [1, 1]], [FAILED, FAILED], [1.0, 1.0])  # failures teach nothing
    assert all(np.array_equal(a, b) for a, b in zip(before, cats.q))
    cats = CategoricalDistributions([2])
    cats.update([[0], [1], [1], [1]], [0.1, 0.2, 0.3, 0.4], [0.1, 1.0, 1.0, 1.0])  # the best is off-distribution
    assert cats.q[0][1] > cats.q[0][0]  # so it counts a tenth: the second-best's option leads
    cats = CategoricalDistributions([5, 5, 5])
    np.random.seed(0)
    for _ in range(20):
        drawn = cats.sample(5)
        assert all(sorted(drawn[:, j]) == list(range(5)) for j in range(3))  # uniform q: each option once


def test_cma_new_settings_are_checked():
    sp = cma_space()
    study = optuna.create_study(directions=["maximize"])
    with pytest.raises(ExperimentError, match="categorical"):
        CMAESOptimizer(study, sp, 1, 4, 0, [1], None, {"categorical": "onehot"})
    for bad in (-1, 2.5, True, "6", 10**6):
        with pytest.raises(ExperimentError, match="initial_design"):
            CMAESOptimizer(study, sp, 1, 4, 0, [1], None, {"initial_design": bad})
    CMAESOptimizer(study, sp, 1, 4, 0, [1], None, {"initial_design": 0, "categorical": "scores"})


def test_cma_pooled_steps_weight_other_instances_by_importance(monkeypatch):
    """Own candidates count fully; another instance's count min(1, p_own / p_drawn) of their options; an
    injected candidate carries its source's categorical options."""
    from evomerge.search import cma as cma_module

    calls = []
    update = cma_module.CategoricalDistributions.update

    def spy(self, options, fitness, importance):
        calls.append((self, list(importance)))
        return update(self, options, fitness, importance)

    monkeypatch.setattr(cma_module.CategoricalDistributions, "update", spy)
    sp = cma_space()
    study, opt = make("cmaes", sp, seed=4, population=4)
    drive(opt, study, sp, 48)
    trials = {t.number: t for t in study.get_trials()}
    learners = [t for t in trials.values() if t.user_attrs.get("cma_learned")]
    weights = [w for _, w in calls]
    assert all(0 < x <= 1 for w in weights for x in w)
    assert any(x < 1 for w in weights for x in w)  # the distributions parted: others' candidates fade
    for t in learners:  # own candidates of the previous generation always count fully
        inst = t.user_attrs["cma_instance"]
        own = [m for m in t.user_attrs["cma_learned"] if trials[m].user_attrs["cma_instance"] == inst]
        assert len(own) == (4 if t.user_attrs["cma_generation"] else 0)
    injected = [t for t in trials.values() if t.user_attrs.get("cma_injected") is not None
                and t.user_attrs["cma_index"] == 0]
    assert injected
    for t in injected:
        source = trials[t.user_attrs["cma_injected"]]
        assert all(t.params[g.name] == source.params[g.name] for g in sp.genes if g.categorical)
