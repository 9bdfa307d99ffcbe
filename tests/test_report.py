"""What a run leaves for people: front.json, trials.csv, PNG plots and a self-contained report.html."""

import csv
import json

import pytest

from evomerge.errors import ExperimentError
from evomerge.search.experiment import Experiment
from evomerge.report import load_run, write_report
from evomerge.search.record import trial_header, trial_row
from evomerge.search.loop import run_search

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def run_dir(tiny_family, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    exp_dict = sh.experiment_dict(tiny_family, tmp, budget=10, fidelity={"rungs": [3, None], "z": 0.5})
    exp_dict["objectives"]["memory"]["options"]["fail_mod"] = 4
    exp_dict["references"] = True
    run_search(Experiment.from_dict(exp_dict), tmp / "run", suite_factory=sh.suite_factory, progress=False)
    return tmp / "run"


def test_report_is_self_contained_and_complete(run_dir):
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and 'src="http' not in html
    front = json.loads((run_dir / "front.json").read_text())
    assert html.count("<td class=recipe>") == len(front["members"]) > 0
    run = load_run(run_dir)
    assert f"Failed candidates ({len(run.failed)})" in html and run.failed
    assert "held-out" in html and "Reference models" in html
    assert "scored with" not in html  # these test suites have one scoring rule; tool_use / memory name theirs
    assert "rung 0 (3 items): 10" in html
    for png in ("front.png", "hypervolume.png", "front_genes.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_front_json_has_scores_with_standard_errors_held_out_and_recipes(run_dir):
    front = json.loads((run_dir / "front.json").read_text())
    assert front["objectives"] == ["coding", "tool_use", "memory"] and front["hypervolume"] > 0
    for m in front["members"]:
        assert m["fidelity"] == 1
        assert set(m["search"]["coding"]) == {"mean", "stderr"}
        assert set(m["heldout"]["coding"]) == {"mean", "stderr"}
        assert m["recipe"]["models"] and m["genome"]


def test_trials_csv_has_a_row_per_finished_trial(run_dir):
    with open(run_dir / "trials.csv") as fh:
        rows = list(csv.reader(fh))
    run = load_run(run_dir)
    genes = rows[0][rows[0].index("failure") + 1:]
    assert rows[0] == trial_header(run.experiment, genes)
    assert len(rows) - 1 == len(run.trials) == 10
    assert all(len(r) == len(rows[0]) for r in rows)
    assert [str(x) for x in trial_row(run.trials[0], run.experiment, genes)] == rows[1]


def test_report_can_be_rebuilt_from_the_run_directory(run_dir):
    (run_dir / "report.html").unlink()
    assert write_report(run_dir) == run_dir / "report.html" and (run_dir / "report.html").is_file()
    with pytest.raises(ExperimentError, match="not a search run directory"):
        load_run(run_dir / "items")
