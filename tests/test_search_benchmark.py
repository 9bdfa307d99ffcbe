"""benchmarks/search_efficiency.py: the surrogate family built from real scores, and the optimizer driver."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import search_efficiency as se  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def truth(method, unit_params):
    """A known response: the method sets a level, the first parameter a slope."""
    level = {"ram": 0.6, "ram_plus": 0.62, "ties": 0.5, "dare_ties": 0.4, "task_arithmetic": 0.55}[method]
    return [level + 0.1 * unit_params[0], level - 0.05 * unit_params[0], 0.3 + 0.01 * len(method)]


def write_scores(tmp_path, n=60, stderr=0.002):
    uniform = se.SearchSpace(se.load_space_spec("method_per_layer", {"layer_groups": {"count": 1, "non_layer": "first"}}),
                             base="/b", models=["/a", "/b", "/c"], model_names=list(se.OBJECTIVES), num_layers=1)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        g = uniform.sample(rng)
        method = g["g0.method"]
        first = next(x for x in uniform.genes if x.method == method)
        y = truth(method, [first.to_unit(g[first.name])])
        row = {"trial": i, **g}
        for o, v in zip(se.OBJECTIVES, y):
            row[o], row[f"{o}_stderr"] = v, stderr
        rows.append(row)
    path = tmp_path / "scores.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "scores_references.json").write_text(json.dumps({"base": {"search_values": [0.1, 0.2, 0.3]}}))
    return path


def test_the_surrogate_learns_a_known_response_and_a_genome_scores_the_mean_over_its_groups(tmp_path):
    path = write_scores(tmp_path)
    sur = se.ScoreSurrogate(path)
    assert sur.rows == 60 and sur.reference == [0.1, 0.2, 0.3]
    space = se.SearchSpace(se.load_space_spec("method_per_layer", {"layer_groups": {"count": 3}}), base="/b",
                           models=["/a", "/b", "/c"], model_names=list(se.OBJECTIVES), num_layers=28)
    problem = se.SurrogateProblem(space, sur)
    rng = np.random.default_rng(1)
    for _ in range(5):
        g = space.sample(rng)
        expected = []
        for group in space.groups:
            method, _ = space.group_rule(group, g)
            first = next(x for x in space.genes if x.group == group.name and x.method == method)
            expected.append(truth(method, [first.to_unit(g[first.name])]))
        assert np.allclose(problem(g), np.mean(expected, axis=0), atol=0.01)


def test_every_optimizer_runs_through_the_driver():
    space = se.SearchSpace(se.load_space_spec("method_per_layer", {"layer_groups": {"count": 2}}), base="/b",
                           models=["/a", "/b", "/c"], model_names=list(se.OBJECTIVES), num_layers=28)
    problem = se.KnownOptimumProblem(space)
    for name in ("nsga2", "cmaes", "tpe", "random", "gp", "additive"):
        settings = {"n_startup_trials": 4, "preliminary_samples": 32, "local_searches": 2} if name == "gp" else {}
        curve, own = se.run_optimizer(name, space, problem, 0, 8, 4, settings)
        assert len(curve) == 8 and curve == sorted(curve) and len(own) == 8 and min(own) >= 0
    assert se.evals_to_reach([0.1, 0.2, 0.3], 0.2) == 2 and se.evals_to_reach([0.1], 0.2) is None


def test_pairwise_family_is_not_additive_over_groups():
    """f(a0, b1) + f(b0, a1) != f(a0, a1) + f(b0, b1) for genomes differing in two neighbouring groups: the
    change g0 makes depends on g1 (an additive function would give equality)."""
    space = se.SearchSpace(se.load_space_spec("ram_per_layer", {"layer_groups": {"count": 2}}), base="/b",
                           models=["/a", "/b", "/c"], model_names=list(se.OBJECTIVES), num_layers=28)
    problem = se.PairwiseProblem(space, interaction=0.5)
    plain = se.KnownOptimumProblem(space)

    def genome(u0, u1):
        values = {g.name: g.midpoint() for g in space.genes}
        for g in space.genes:
            if g.group in ("g0", "g1"):
                values[g.name] = g.from_unit(u0 if g.group == "g0" else u1)
        return values

    same = genome(0.2, 0.2)
    assert problem._smoothness(same) == pytest.approx(1.0)  # one pair of neighbours, identical genes
    assert problem._smoothness(genome(0.2, 0.7)) == pytest.approx(0.5)
    assert problem(same) == pytest.approx([0.5 * v + 0.5 for v in plain(same)])
    a = np.array(problem(genome(0.2, 0.2))) + np.array(problem(genome(0.7, 0.7)))
    b = np.array(problem(genome(0.2, 0.7))) + np.array(problem(genome(0.7, 0.2)))
    assert np.allclose(a - b, 0.5)  # the additive part cancels; the interaction: 0.5 * (1 + 1 - 0.5 - 0.5)


def test_markdown_table_is_written_with_its_command(tmp_path, monkeypatch):
    out = tmp_path / "table.md"
    monkeypatch.setattr(sys, "argv", ["search_efficiency.py", "--skip-overhead", "--family", "synthetic", "--groups",
                                      "2", "--seeds", "1", "--evals", "8", "--optimizers", "random,additive",
                                      "--markdown", str(out)])
    se.main()
    text = out.read_text()
    assert text.startswith("<!-- python benchmarks/search_efficiency.py --skip-overhead")
    rows = [line for line in text.splitlines() if line.startswith("| synthetic")]
    assert [r.split(" | ")[4] for r in rows] == ["random", "additive"]


def test_the_readme_sample_efficiency_table_is_the_benchmark_summary():
    """The README quotes benchmarks/search_efficiency_summary.py over the committed --markdown outputs, verbatim:
    a figure edited by hand in the README, or an output file changed without the README, fails here."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = [repo / "benchmarks/results/search_efficiency" / f"{f}.md" for f in ("synthetic", "surrogate", "pairwise")]
    out = subprocess.run([sys.executable, str(repo / "benchmarks/search_efficiency_summary.py"), *map(str, files)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.count("\n") >= 7 and "| synthetic, method_per_layer | 35 / 35 |" in out
    assert out in (repo / "README.md").read_text()
