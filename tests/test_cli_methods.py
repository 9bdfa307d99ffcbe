"""`evomerge methods`: the method tables of docs/methods.md are the registry's, generated, never hand-edited."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from evomerge.cli import main
from evomerge.commands import methods as methods_command
from evomerge.methods.registry import METHODS, get_method
from evomerge.methods.spec import ParamSpec

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "methods.md"
REGENERATE = "evomerge methods --update docs/methods.md"


def test_committed_methods_page_equals_the_generated_tables():
    committed = methods_command.generated_block(PAGE.read_text(encoding="utf-8"))
    assert committed is not None, f"{PAGE}: the BEGIN/END markers of the generated tables are missing"
    assert committed == methods_command.markdown_tables(), (
        f"{PAGE} differs from the method registry: regenerate it with `{REGENERATE}` (from the repository root)")


def test_markdown_covers_every_registered_method_and_parameter(capsys):
    assert main(["methods", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == methods_command.markdown_tables()
    method_part, param_part = out.split("## Parameters")
    method_rows = [line for line in method_part.splitlines() if line.startswith("| `")]
    param_rows = [line for line in param_part.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in method_rows] == list(METHODS)
    expected = [(name, p.name) for name, spec in METHODS.items() for p in spec.params]
    assert [(row.split("`")[1], row.split("`")[3]) for row in param_rows] == expected


def test_a_changed_spec_shows_in_the_tables():
    """The tables are computed from the specs, not copied: another default or range gives another row."""
    spec = get_method("slerp")
    changed = spec.__class__(**{**spec.__dict__, "params": (
        ParamSpec("t", 0.25, "interpolation position", low=0.0, high=1.0, high_inclusive=False),)})
    rows = methods_command.markdown_tables([changed]).splitlines()
    assert "| `slerp` | `t` | `0.25` | [0, 1) | no | interpolation position |" in rows


@pytest.mark.parametrize("param,expected", [
    (ParamSpec("x", 1e-5, "", low=0.0, high=1.0, low_inclusive=False), "(0, 1]"),
    (ParamSpec("x", 0.01, "", low=0.0, high=1.0, high_inclusive=False), "[0, 1)"),
    (ParamSpec("x", 2.0, "", low=0.5), "[0.5, inf)"),
    (ParamSpec("x", 1.0, ""), "any finite"),
    (ParamSpec("x", True, "", choices=(True, False)), "`true` | `false`"),
    (ParamSpec("x", "global", "", choices=("global", "tensor")), "`global` | `tensor`"),
])
def test_valid_values_are_written_as_a_user_reads_them(param, expected):
    assert methods_command.valid_values(param) == expected


def test_defaults_are_written_as_in_yaml():
    assert [methods_command.format_value(v) for v in (1e-5, 0.1, 2.0, True, False, "global")] == [
        "1e-05", "0.1", "2", "true", "false", "global"]


def test_a_pipe_in_a_description_is_escaped():
    row = methods_command.parameter_table([get_method("ram")])[2]
    assert "\\|tau\\| > epsilon" in row


def _methods_compared_with_mergekit(test_file: Path) -> set[str]:
    """First element of every case of CASES / LLAMA_CASES, plus `test_<method>_matches_mergekit` tests."""
    tree = ast.parse(test_file.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("CASES", "LLAMA_CASES")
                                                for t in node.targets):
            names.update(ast.literal_eval(case.elts[0]) for case in node.value.elts)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") \
                and node.name.endswith("_matches_mergekit"):
            names.add(node.name[len("test_"):-len("_matches_mergekit")])
    return names


def test_tested_equal_column_matches_the_equivalence_tests():
    """The 'tested equal to mergekit' column says yes exactly for the methods the equivalence tests compare."""
    compared = _methods_compared_with_mergekit(REPO / "tests" / "test_mergekit_equivalence.py")
    assert set(methods_command.MERGEKIT_TESTED) == set(METHODS), "every method needs an entry in MERGEKIT_TESTED"
    said_yes = {name for name, text in methods_command.MERGEKIT_TESTED.items() if text.startswith("yes")}
    assert said_yes == compared & set(METHODS)


def test_plain_listing_names_every_method_and_one_method_alone(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, spec in METHODS.items():
        assert f"{name}: {spec.description}" in out
    assert "rho_scope  default global, global | tensor:" in out
    assert main(["methods", "slerp"]) == 0
    one = capsys.readouterr().out
    assert one.startswith("slerp: ") and "t  default 0.5, [0, 1]:" in one and "ties" not in one


def test_unknown_method_and_misused_flags_are_refused(capsys):
    assert main(["methods", "no_such_method"]) == 1
    assert "unknown merge method 'no_such_method'" in capsys.readouterr().err
    assert main(["methods", "ties", "--markdown"]) == 1
    assert "NAME lists one method" in capsys.readouterr().err


def test_update_rewrites_only_the_generated_block(tmp_path, capsys):
    page = tmp_path / "methods.md"
    page.write_text(f"# title\n\nintro\n\n{methods_command.BEGIN_MARKER}\nstale table\n"
                    f"{methods_command.END_MARKER}\n\nnotes\n", encoding="utf-8")
    assert main(["methods", "--update", str(page)]) == 0
    assert "updated" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nintro\n\n") and text.endswith(f"{methods_command.END_MARKER}\n\nnotes\n")
    assert methods_command.generated_block(text) == methods_command.markdown_tables()
    assert main(["methods", "--update", str(page)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_update_refuses_a_page_without_markers(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# no markers\n", encoding="utf-8")
    assert main(["methods", "--update", str(page)]) == 1
    assert f"{page}: no generated block" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == "# no markers\n"
