"""mergekit interop both ways (issue 12 §5): mergekit YAMLs read by `evomerge merge` / `evomerge recipe convert`,
recipes and the bundled search spaces' results written for `mergekit-yaml`, each checked by merging with both
tools and comparing every tensor; every refusal is pinned with the key or rule it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from evomerge.errors import RecipeError
from evomerge.mergekit_compat.export import ExportError
from evomerge.mergekit_compat.importer import MergekitImportError, recipe_from_mergekit
from test_mergekit_equivalence import assert_same_tensors, load_checkpoint, run_mergekit

AGENTS = ("coding", "tool_use", "memory")
MERGEKIT_YAML = Path(sys.executable).with_name("mergekit-yaml")


@pytest.fixture(scope="module")
def family(tmp_path_factory, tokenizer):
    """Four decoder layers, so mergekit's gradients have interior points (t = 1/3, 2/3)."""
    from evomerge.synthetic import TinyShape, build_tiny_family

    shape = TinyShape(hidden_size=32, intermediate_size=64, num_hidden_layers=4)
    return build_tiny_family(tmp_path_factory.mktemp("mk_interop"), shape=shape, tokenizer=tokenizer, seed=3)


def _models(family):
    return [str(family[a]) for a in AGENTS]


def _float_names(path) -> list[str]:
    from evomerge.checkpoint import Checkpoint

    return [n for n, info in Checkpoint.open(path).tensors.items() if info.is_float]


def _evomerge(recipe) -> dict[str, torch.Tensor]:
    from evomerge.engine import ResidentMerger

    return ResidentMerger(recipe.base, recipe.models, device="cpu").merge_state_dict(recipe)


def _evomerge_cli(args: list[str]) -> None:
    from evomerge.cli import main

    assert main(args) == 0


# -- the method table is mergekit's ------------------------------------------------------------------


@pytest.mark.mergekit
def test_method_table_matches_mergekits_registry():
    """Scopes, defaults and names of every shared method are read from mergekit 0.1.5 itself."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import ParameterScope

    from evomerge.mergekit_compat.methods import MERGEKIT_ONLY, REQUIRED, SHARED_METHODS
    from evomerge.methods.registry import get_method

    assert set(SHARED_METHODS) | set(MERGEKIT_ONLY) == {m.spec.name for m in registry.registered_methods()}
    for name, ours in SHARED_METHODS.items():
        theirs = {p.name: p for p in registry.get(name).spec.parameters}
        assert set(theirs) == {p.name for p in ours.params} | ours.ignored, name
        for p in ours.params:
            t = theirs[p.name]
            assert p.scope == ("shared" if t.scope == ParameterScope.SHARED else "per_model"), (name, p.name)
            assert (p.default is REQUIRED) == t.required, (name, p.name)
            if not t.required:
                assert p.default == t.default, (name, p.name)
        evo = {q.name for q in get_method(ours.evomerge).params}
        assert {p.name for p in ours.params} | set(ours.fixed) <= evo, name


# -- import: a mergekit YAML merged by both tools ------------------------------------------------------

IMPORT_CASES = {
    # filter conditionals on per-model and shared parameters, a gradient inside a conditional, a fall-through
    # (the model's list has no default: the top level decides), and int8_mask (no effect on values)
    "ties": {"merge_method": "ties", "parameters": {
        "density": [{"filter": "self_attn", "value": [0.3, 0.9]}, {"value": 0.6}],
        "lambda": [{"filter": "mlp", "value": 0.8}, {"value": 1.1}], "int8_mask": True, "weight": 0.5},
        "models": [{"weight": [{"filter": "layers.2.", "value": 0.9}]}, {"weight": 0.4, "density": 0.5},
                   {"weight": [0.2, 1.0]}]},
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {
        "normalize": [{"filter": "embed", "value": True}, {"value": False}], "lambda": 0.9},
        "models": [{"weight": [{"filter": "self_attn", "value": 0.5}, {"value": 0.3}]}, {"weight": 0.7},
                   {"weight": [0.1, 0.6, 0.2]}]},
    "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", "parameters": {"gamma": 0.05, "density": 0.7},
                         "models": [{"weight": 0.5}, {"weight": [{"filter": "mlp", "value": 0.9}, {"value": 0.2}]},
                                    {"weight": 0.3, "density": "5e-1"}]},
    "dare_linear": {"merge_method": "dare_linear",  # density 1: deterministic, so the tensors must agree
                    "models": [{"weight": 0.5}, {"weight": [0.2, 0.8]}, {"weight": 0.3}]},
    "ram": {"merge_method": "ram", "parameters": {"epsilon": "1e-3"}, "models": [{}, {}, {}]},
    "ramplus_tl": {"merge_method": "ramplus_tl", "parameters": {
        "r": [{"filter": "self_attn", "value": 0.4}, {"value": 0.2}], "alpha": [0.1, 1.5], "epsilon": 1e-4},
        "models": [{}, {}, {}]},
    "linear": {"merge_method": "linear", "parameters": {"normalize": False},
               "models": [{"weight": 0.2}, {"weight": [{"filter": "norm", "value": 0.1}, {"value": 0.5}]},
                          {"weight": 0.3}]},
}


def _mk_config(case: str, family) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(IMPORT_CASES[case]))  # a deep copy
    entries = [{"model": m, **({"parameters": p} if p else {})} for m, p in zip(_models(family), cfg["models"])]
    cfg["models"] = entries
    if case != "linear":
        cfg["base_model"] = str(family["base"])
        cfg["models"] = [{"model": str(family["base"])}] + entries  # mergekit's habit: the base listed too
    return {**cfg, "dtype": "float32"}


@pytest.mark.mergekit
@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_imported_mergekit_config_merges_like_mergekit(family, tmp_path, case):
    config = _mk_config(case, family)
    recipe = recipe_from_mergekit(config, "test")
    assert recipe.method == {"ramplus_tl": "ram_plus"}.get(case, case)
    assert_same_tensors(_evomerge(recipe), run_mergekit(config, tmp_path / "mk"))


@pytest.mark.mergekit
def test_slerp_gradient_imports(family, tmp_path):
    """slerp: mergekit interpolates from base_model; t given as a gradient over the 4 layers."""
    config = {"merge_method": "slerp", "base_model": str(family["base"]), "dtype": "float32",
              "models": [{"model": str(family["base"])}, {"model": str(family["coding"])}],
              "parameters": {"t": [{"filter": "mlp", "value": [0.0, 0.3, 1.0]}, {"value": 0.5}]}}
    recipe = recipe_from_mergekit(config, "test")
    assert recipe.method == "slerp" and recipe.models == [str(family["base"]), str(family["coding"])]
    assert recipe.rule_for("model.layers.1.mlp.up_proj.weight").parameters["t"] == pytest.approx(0.2)
    assert_same_tensors(_evomerge(recipe), run_mergekit(config, tmp_path / "mk"))


def test_gradient_positions_are_mergekits(family):
    """t = layer / (layers - 1) inside the decoder layers, 0 outside; first matching filter wins."""
    config = {"merge_method": "task_arithmetic", "base_model": str(family["base"]),
              "models": [{"model": m, "parameters": {"weight": 1.0}} for m in _models(family)],
              "parameters": {"lambda": [{"filter": "layers.3.", "value": 5.0}, {"value": [0.0, 0.3, 0.9]}]}}
    recipe = recipe_from_mergekit(config, "test")
    lam = {n: recipe.rule_for(n).parameters["lambda"] for n in _float_names(family["base"])}
    assert lam["model.embed_tokens.weight"] == 0.0 and lam["lm_head.weight"] == 0.0
    assert lam["model.layers.0.mlp.up_proj.weight"] == 0.0
    assert lam["model.layers.1.mlp.up_proj.weight"] == pytest.approx(0.2)
    assert lam["model.layers.2.mlp.up_proj.weight"] == pytest.approx(0.3 + 0.6 * 1 / 3)
    assert lam["model.layers.3.mlp.up_proj.weight"] == 5.0


@pytest.mark.mergekit
def test_evomerge_merge_reads_a_mergekit_yaml_like_mergekit_yaml(family, tmp_path):
    """The two command lines on one mergekit file give the same tensors (bf16 output via out_dtype)."""
    config = _mk_config("ties", family)
    config["out_dtype"] = "bfloat16"
    path = tmp_path / "mk.yaml"
    path.write_text(yaml.safe_dump(config))
    _mergekit_yaml(path, tmp_path / "mk_out")
    _evomerge_cli(["merge", str(path), str(tmp_path / "evo_out"), "--device", "cpu", "--no-progress"])
    theirs, ours = load_checkpoint(tmp_path / "mk_out"), load_checkpoint(tmp_path / "evo_out")
    assert {t.dtype for t in ours.values()} == {torch.bfloat16}
    # both compute in float32 and round once to bf16; the sums' order may differ by an ulp before rounding
    for name, t in theirs.items():
        torch.testing.assert_close(ours[name].float(), t.float(), atol=1e-6, rtol=2 ** -7, msg=name)
    # and `recipe convert` writes the recipe `merge` used
    _evomerge_cli(["recipe", "convert", str(path), str(tmp_path / "recipe.yaml")])
    from evomerge.engine import load_recipe_file

    assert load_recipe_file(tmp_path / "recipe.yaml").to_dict() == recipe_from_mergekit(config, "x").to_dict()


def _mergekit_yaml(config: Path, out: Path) -> None:
    """The `mergekit-yaml` command itself, on the CPU."""
    subprocess.run([str(MERGEKIT_YAML), str(config), str(out), "--lazy-unpickle", "--no-cuda", "--quiet",
                    "--no-copy-tokenizer", "--no-write-model-card"], check=True, capture_output=True)


# -- import refusals: each names the key and says it is a mergekit file ---------------------------------


REFUSALS = [
    ({"merge_method": "della"}, "merge_method 'della' (a mergekit method evomerge does not have)"),
    ({"slices": []}, "key 'slices' is not supported"),
    ({"modules": {}}, "key 'modules' is not supported"),
    ({"tokenizer": {"source": "union"}}, "key 'tokenizer' is not supported"),
    ({"chat_template": "chatml"}, "key 'chat_template' is not supported"),
    ({"paramters": {}}, "unknown key 'paramters'"),
    ({"tokenizer_source": "union"}, "tokenizer_source 'union' is not supported"),
    ({"dtype": "int8"}, "dtype 'int8' is not supported"),
    ({"parameters": {"densty": 0.5}}, "mergekit's 'ties' has no parameter 'densty'"),
    ({"parameters": {"density": [{"filter": "mlp", "valu": 0.5}]}}, "parameters.density[0]: a conditional"),
    ({"parameters": {"density": "half"}}, "parameters.density: expected a number, got 'half'"),
    ({"parameters": {"normalize": 1.5}}, "parameters.normalize: expected true or false"),
    ({"random_seed": "x"}, "random_seed must be an integer"),
    ({"base_model": None}, "mergekit's 'ties' needs a 'base_model'"),
]


@pytest.mark.parametrize("change,message", REFUSALS, ids=[m for _, m in REFUSALS])
def test_import_refusals_name_the_key(family, change, message):
    config = {"merge_method": "ties", "base_model": str(family["base"]), **{"models": [
        {"model": m, "parameters": {"weight": 0.5}} for m in _models(family)]}, **change}
    with pytest.raises(MergekitImportError, match="a mergekit configuration") as err:
        recipe_from_mergekit(config, "f.yaml", tensor_names=_float_names(family["base"]))
    assert message in str(err.value)


def test_import_refusals_of_models(family):
    names = _float_names(family["base"])
    base = str(family["base"])

    def refuse(config, message):
        with pytest.raises(MergekitImportError, match="a mergekit configuration") as err:
            recipe_from_mergekit(config, "f.yaml", tensor_names=names)
        assert message in str(err.value), str(err.value)

    models = [{"model": m, "parameters": {"weight": 0.5}} for m in _models(family)]
    refuse({"merge_method": "ties", "base_model": base, "models": models[:2] + [{"model": _models(family)[2]}]},
           f"parameter 'weight' of model '{_models(family)[2]}' has no value for tensor")
    refuse({"merge_method": "ties", "base_model": base,
            "models": [{"model": m, "parameters": {"weight": 0.5, "lambda": 2.0}} for m in _models(family)]},
           "models[0].parameters: 'lambda' is a shared parameter of 'ties'")
    refuse({"merge_method": "linear", "base_model": base, "models": models}, "key 'base_model' with linear")
    refuse({"merge_method": "ties", "base_model": base, "models": [{"model": "no/such/dir"}]},
           "'no/such/dir' is not a local checkpoint directory nor a Hugging Face Hub id")
    refuse({"merge_method": "ties", "base_model": base, "models": [{"model": base + "+lora"}]},
           "a LoRA adapter '+...' is not supported")
    refuse({"merge_method": "ties", "base_model": base, "models": [{"model": _models(family)[0], "layer_range": [0, 2]}]},
           "models[0]: unknown key 'layer_range'")
    refuse({"merge_method": "ties", "base_model": base, "models": _models(family)},
           "models[0] must be a mapping with a 'model' key")
    refuse({"merge_method": "slerp", "base_model": base, "models": [{"model": m} for m in _models(family)],
            "parameters": {"t": 0.5}},
           "slerp needs exactly one model besides base_model, got 3")


def test_evomerge_merge_refuses_an_unsupported_mergekit_file_naming_the_key(family, tmp_path, capsys):
    from evomerge.cli import main

    path = tmp_path / "della.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "della", "base_model": str(family["base"]),
                                    "models": [{"model": m, "parameters": {"weight": 0.5}} for m in _models(family)]}))
    assert main(["merge", str(path), str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{path} (a mergekit configuration): merge_method 'della'" in err and not (tmp_path / "out").exists()
    assert main(["recipe", "convert", str(path), str(tmp_path / "r.yaml")]) == 1
    assert "merge_method 'della'" in capsys.readouterr().err and not (tmp_path / "r.yaml").exists()


def test_an_evomerge_recipe_loader_says_a_mergekit_file_is_one(tmp_path):
    from evomerge.recipe import MergeRecipe

    path = tmp_path / "mk.yaml"
    path.write_text("merge_method: ties\nbase_model: a\nmodels: [{model: b}]\n")
    with pytest.raises(RecipeError, match="this is a mergekit configuration .* `evomerge merge` reads it"):
        MergeRecipe.from_yaml(path)


# -- export: the bundled search spaces' results -----------------------------------------------------------


def _space(family, name: str, overrides=None):
    from evomerge.genome import SearchSpace, load_space_spec

    spec = load_space_spec(name, overrides)
    return SearchSpace.for_checkpoints(spec, str(family["base"]), _models(family), seed=7)


def _genome(space, seed: int, **pinned):
    """Random in-bounds gene values; `pinned` maps a substring of a gene name (or 'method') to a value."""
    gen = torch.Generator().manual_seed(seed)
    values = {}
    for g in space.genes:
        u = float(torch.rand((), generator=gen))
        values[g.name] = g.choices[min(int(u * len(g.choices)), len(g.choices) - 1)] if g.categorical else g.from_unit(u)
        for key, v in pinned.items():
            if (g.param == key) or (key == "method" and g.method is None):
                values[g.name] = v
    return values


def _export_and_compare(family, recipe, tmp_path, atol=1e-6):
    from evomerge.search.mergekit_export import to_mergekit

    config = to_mergekit(recipe, _float_names(family["base"]))
    assert_same_tensors(_evomerge(recipe), run_mergekit(config, tmp_path / "mk"), atol=atol)
    return config


@pytest.mark.mergekit
def test_weights_densities_results_export(family, tmp_path):
    """DARE-TIES with evomerge's 1/density rescale exports as weight/density without mergekit's rescale.
    At density 1 mergekit's tensors are ours; below 1 the masks differ between the tools, so the exported file
    read back by evomerge (same seed, same masks) must merge like the original recipe."""
    space = _space(family, "weights_densities")
    exact = space.decode(_genome(space, 0, density=1.0))
    config = _export_and_compare(family, exact, tmp_path)
    assert config["merge_method"] == "dare_ties" and config["parameters"]["rescale"] is False

    recipe = space.decode(_genome(space, 1))
    from evomerge.search.mergekit_export import to_mergekit

    config = to_mergekit(recipe, _float_names(family["base"]))
    back = recipe_from_mergekit(config, "exported")
    assert back.seed == recipe.seed and back.rule_for("lm_head.weight").parameters["rescale"] is False
    ours, again = _evomerge(recipe), _evomerge(back)
    for name, t in ours.items():
        torch.testing.assert_close(again[name], t, atol=1e-6, rtol=0, msg=name)
    # the rewrite is not a no-op: a recipe without it differs
    assert any(p["density"] != (1.0,) * 3 for p in (recipe.rule_for(n).parameters for n in ours))


@pytest.mark.mergekit
def test_ram_per_layer_results_refuse_with_the_rule_then_export_with_tensor_rho(family, tmp_path):
    from evomerge.search.mergekit_export import to_mergekit

    space = _space(family, "ram_per_layer")
    with pytest.raises(ExportError, match="rho_scope: global .* only ramplus_tl.*rho_scope: tensor"):
        to_mergekit(space.decode(_genome(space, 2)), _float_names(family["base"]))
    # r = 0 everywhere: RAM+ is RAM whatever rho is, and mergekit has ram
    assert _export_and_compare(family, space.decode(_genome(space, 3, r=0.0)), tmp_path / "r0")["merge_method"] == "ram"
    tensor_rho = _space(family, "ram_per_layer", {"methods": {"ram_plus": {"rho_scope": {"value": "tensor"}}}})
    config = _export_and_compare(family, tensor_rho.decode(_genome(tensor_rho, 2)), tmp_path / "tl")
    assert config["merge_method"] == "ramplus_tl" and isinstance(config["parameters"]["alpha"], list)


@pytest.mark.mergekit
@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "ram"])
def test_method_per_layer_results_export_when_one_method_was_picked(family, tmp_path, method):
    from evomerge.search.mergekit_export import to_mergekit

    space = _space(family, "method_per_layer")
    config = _export_and_compare(family, space.decode(_genome(space, 4, method=method)), tmp_path)
    assert config["merge_method"] == method
    mixed = _genome(space, 4, method=method)
    mixed[next(g.name for g in space.genes if g.method is None)] = "ram_plus"
    with pytest.raises(ExportError, match="mergekit merges every tensor with one method"):
        to_mergekit(space.decode(mixed), _float_names(family["base"]))


@pytest.mark.mergekit
def test_front_export_writes_a_file_mergekit_yaml_merges_like_evomerge(family, tmp_path):
    """`evomerge recipe convert` (the export `front --export` uses) then the real `mergekit-yaml` command."""
    space = _space(family, "ram_per_layer", {"methods": {"ram_plus": {"rho_scope": {"value": "tensor"}}}})
    recipe = space.decode(_genome(space, 5))
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    _evomerge_cli(["recipe", "convert", str(tmp_path / "recipe.yaml"), str(tmp_path / "mk.yaml")])
    _mergekit_yaml(tmp_path / "mk.yaml", tmp_path / "mk_out")
    _evomerge_cli(["merge", str(tmp_path / "recipe.yaml"), str(tmp_path / "evo_out"), "--device", "cpu",
                   "--no-progress"])
    assert_same_tensors(load_checkpoint(tmp_path / "evo_out"), load_checkpoint(tmp_path / "mk_out"))


@pytest.mark.mergekit
def test_slerp_and_linear_export(family, tmp_path):
    from evomerge.recipe import MergeRecipe

    slerp = MergeRecipe(models=[str(family["base"]), str(family["coding"])], method="slerp", parameters={"t": 0.3},
                        overrides=[{"layers": "1-2", "modules": ["mlp"], "parameters": {"t": 0.8}}])
    config = _export_and_compare(family, slerp, tmp_path / "slerp")
    assert config["base_model"] == str(family["base"]) and config["models"] == [{"model": str(family["coding"])}]
    # linear with a recipe base: the base is only evomerge's reference, so it must not reach mergekit's inputs
    linear = MergeRecipe(base=str(family["base"]), models=_models(family), method="linear",
                         parameters={"weight": [0.2, 0.5, 0.3]})
    assert "base_model" not in _export_and_compare(family, linear, tmp_path / "linear")


def test_export_refusals_name_the_rule(family):
    from evomerge.recipe import MergeRecipe
    from evomerge.search.mergekit_export import to_mergekit

    names = _float_names(family["base"])
    base, models = str(family["base"]), _models(family)
    with pytest.raises(ExportError, match="no method equivalent to 'ram_plus_soft'"):
        to_mergekit(MergeRecipe(base=base, models=models, method="ram_plus_soft"), names)
    with pytest.raises(ExportError, match="inverse_density and normalize: true has no mergekit equivalent"):
        to_mergekit(MergeRecipe(base=base, models=models, method="dare_ties",
                                parameters={"density": 0.5, "normalize": True}), names)
    with pytest.raises(ExportError, match="rho_scope: global"):
        to_mergekit(MergeRecipe(base=base, models=models, method="ram_plus", overrides=[
            {"layers": 0, "parameters": {"rho_scope": "tensor"}}]), names)
    # rescale off: the mode does not matter, so it is no reason to refuse
    ok = to_mergekit(MergeRecipe(base=base, models=models, method="dare_linear",
                                 parameters={"density": 0.5, "rescale": False}), names)
    assert ok["parameters"]["rescale"] is False and ok["models"][0]["parameters"]["weight"] == 1.0


def test_recipe_convert_refuses_a_recipe_mergekit_cannot_express(family, tmp_path, capsys):
    from evomerge.cli import main
    from evomerge.recipe import MergeRecipe

    src = tmp_path / "soft.yaml"
    src.write_text(MergeRecipe(base=str(family["base"]), models=_models(family), method="ram_plus_soft").to_yaml())
    assert main(["recipe", "convert", str(src), str(tmp_path / "mk.yaml")]) == 1
    assert "no method equivalent to 'ram_plus_soft'" in capsys.readouterr().err
    assert not (tmp_path / "mk.yaml").exists()
    (tmp_path / "mk.yaml").write_text("x: 1\n")
    assert main(["recipe", "convert", str(src), str(tmp_path / "mk.yaml")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
