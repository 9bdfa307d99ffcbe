"""The method table: names, parameters, defaults, validation, and properties every method keeps."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from evomerge.errors import RecipeError
from evomerge.methods.registry import METHODS, get_method
from evomerge.methods.spec import GlobalOverlap, TensorContext
from evomerge.recipe import MergeRecipe
from evomerge.taskvectors import overlap_counts

# name -> {parameter: default}; docs/methods.md's parameter table is this
DEFAULTS = {
    "ram": {"epsilon": 1e-5},
    "ram_plus": {"epsilon": 1e-5, "r": 0.1, "alpha": 2.0, "rho_scope": "global"},
    "ram_plus_soft": {"epsilon": 1e-5, "r": 0.1, "rho_scope": "global"},
    "linear": {"weight": 1.0, "normalize": True},
    "task_arithmetic": {"weight": 1.0, "normalize": False, "lambda": 1.0},
    "ties": {"weight": 1.0, "density": 1.0, "normalize": True, "rescale": False, "lambda": 1.0},
    "dare_linear": {"weight": 1.0, "density": 1.0, "normalize": False, "rescale": True,
                    "rescale_mode": "inverse_density", "lambda": 1.0},
    "dare_ties": {"weight": 1.0, "density": 1.0, "normalize": False, "rescale": True,
                  "rescale_mode": "inverse_density", "lambda": 1.0},
    "breadcrumbs": {"weight": 1.0, "density": 1.0, "gamma": 0.01, "normalize": False, "rescale": False, "lambda": 1.0},
    "breadcrumbs_ties": {"weight": 1.0, "density": 1.0, "gamma": 0.01, "normalize": False, "rescale": False,
                         "lambda": 1.0},
    "slerp": {"t": 0.5},
}


def test_registry_names_and_defaults():
    assert set(METHODS) == set(DEFAULTS)
    for name, spec in METHODS.items():
        assert spec.name == name
        assert {p.name: p.default for p in spec.params} == DEFAULTS[name], name
        assert all(p.description for p in spec.params)
    assert {n for n, s in METHODS.items() if s.randomized} == {"dare_linear", "dare_ties"}
    assert {n for n, s in METHODS.items() if not s.requires_base} == {"linear", "slerp"}
    assert {n for n, s in METHODS.items() if s.global_overlap_param} == {"ram_plus", "ram_plus_soft"}


def test_unknown_method_is_a_recipe_error():
    with pytest.raises(RecipeError, match="unknown merge method 'tie'.*ties"):
        get_method("tie")
    with pytest.raises(RecipeError, match="unknown merge method"):
        MergeRecipe.from_dict({"base": "b", "models": ["a"], "method": "average"})


def test_unknown_parameter_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"'ties' has no parameter\(s\) \['densty'\]"):
        get_method("ties").resolve({"densty": 0.5}, 2, "recipe")
    with pytest.raises(RecipeError, match="int8_mask"):  # mergekit's memory option has no meaning here
        MergeRecipe.from_dict({"base": "b", "models": ["a"], "method": "ties", "parameters": {"int8_mask": True}})


@pytest.mark.parametrize("method,params", [
    ("ram", {"epsilon": 0.0}),
    ("ram", {"epsilon": -1e-5}),
    ("ram_plus", {"r": -0.1}),
    ("ram_plus", {"r": 1.5}),
    ("ram_plus", {"alpha": 0.0}),
    ("ram_plus", {"rho_scope": "layer"}),
    ("ram_plus_soft", {"epsilon": math.nan}),
    ("ties", {"density": 0.0}),
    ("ties", {"density": 1.01}),
    ("ties", {"density": [0.5, 2.0]}),
    ("ties", {"normalize": "yes"}),
    ("dare_ties", {"density": 0.0}),
    ("dare_linear", {"rescale_mode": "l2"}),
    ("breadcrumbs", {"gamma": 1.0}),
    ("breadcrumbs", {"gamma": -0.01}),
    ("task_arithmetic", {"weight": [1.0, 2.0, 3.0]}),  # 2 models
    ("task_arithmetic", {"weight": "heavy"}),
    ("task_arithmetic", {"lambda": math.inf}),
    ("task_arithmetic", {"lambda": [1.0, 2.0]}),  # not per model
    ("slerp", {"t": 1.5}),
])
def test_invalid_parameters_are_recipe_errors(method, params):
    with pytest.raises(RecipeError, match="recipe"):
        get_method(method).resolve(params, 2, "recipe")


def test_recipe_checks_parameters_of_overrides_too():
    with pytest.raises(RecipeError, match=r"overrides\[0\].*density"):
        MergeRecipe.from_dict({"base": "b", "models": ["a", "c"], "method": "ram",
                               "overrides": [{"layers": "0-1", "method": "ties", "parameters": {"density": 3}}]})


def test_ram_plus_takes_at_most_16_agents():
    get_method("ram").resolve({}, 40, "recipe")  # plain RAM needs no pattern counts
    with pytest.raises(RecipeError, match="1-16 model"):
        get_method("ram_plus").resolve({}, 17, "recipe")


def test_per_model_parameters_broadcast():
    params = get_method("ties").resolve({"weight": [0.5, 1.5, 1.0], "density": 0.3}, 3, "recipe")
    assert params["weight"] == (0.5, 1.5, 1.0) and params["density"] == (0.3, 0.3, 0.3)


# -- properties of every method -----------------------------------------------------------------


def run(name, base, deltas, params=None):
    spec = get_method(name)
    resolved = spec.resolve(params or {}, len(deltas), "test")
    eps = spec.global_overlap_param and resolved[spec.global_overlap_param]
    overlap = overlap_counts(deltas, eps).as_global_overlap(eps) if eps else None
    return spec.merge(base, deltas, resolved, TensorContext("model.layers.1.mlp.down_proj.weight", 7, overlap))


def sample(n_models=3, shape=(33, 17), seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    deltas = [torch.randn(shape, generator=g) * 1e-3 * (torch.rand(shape, generator=g) < 0.5) for _ in range(n_models)]
    return base.to(device), [d.to(device) for d in deltas]


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_methods_return_float32_of_the_base_shape_and_leave_inputs_alone(name):
    base, deltas = sample(2 if name == "slerp" else 3)
    params = {"density": 0.5} if "density" in DEFAULTS[name] else {}
    copies = [base.clone()] + [d.clone() for d in deltas]
    out = run(name, base, deltas, params)
    assert out.dtype == torch.float32 and out.shape == base.shape
    assert out.data_ptr() not in {t.data_ptr() for t in [base, *deltas]}
    for before, after in zip(copies, [base, *deltas]):
        assert torch.equal(before, after), f"{name} modified its inputs (the engine keeps them resident)"


# methods configured as averages: N identical agents must give that agent back
AVERAGING = {
    "ram": {}, "ram_plus": {}, "ram_plus_soft": {}, "linear": {}, "slerp": {},
    "task_arithmetic": {"normalize": True}, "ties": {}, "dare_linear": {"normalize": True},
    "dare_ties": {"normalize": True}, "breadcrumbs": {"normalize": True}, "breadcrumbs_ties": {"normalize": True},
}


@pytest.mark.parametrize("name", sorted(AVERAGING))
def test_identical_agents_merge_to_the_agent(name):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(21, 8, generator=g)
    delta = torch.randn(21, 8, generator=g) * 1e-2  # all far above epsilon
    n = 2 if name == "slerp" else 3
    out = run(name, base, [delta.clone() for _ in range(n)], AVERAGING[name])
    torch.testing.assert_close(out, base + delta, rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_methods_run_on_cuda_like_on_cpu(name):
    n = 2 if name == "slerp" else 3
    params = {"density": 0.4} if "density" in DEFAULTS[name] else {}
    base, deltas = sample(n, shape=(512, 384))
    gbase, gdeltas = base.cuda(), [d.cuda() for d in deltas]
    out = run(name, gbase, gdeltas, params)
    assert out.device.type == "cuda"
    if get_method(name).randomized:
        # CUDA and CPU generators draw different streams: same seed -> same CUDA tensor, same keep rate
        assert torch.equal(out, run(name, gbase, gdeltas, params))
        changed = (deltas[0] != 0).sum().item()
        kept = ((out.cpu() - base) != 0).sum().item()
        assert kept > 0 and changed > 0
        return
    # magnitude selection, reductions and fused kernels may differ in the last bits
    torch.testing.assert_close(out.cpu(), run(name, base, deltas, params), rtol=1e-5, atol=1e-6)


def test_global_overlap_spec_contract():
    """What the engine relies on: RAM+ names its epsilon parameter for the statistics pass."""
    for name in ("ram_plus", "ram_plus_soft"):
        spec = get_method(name)
        resolved = spec.resolve({"epsilon": 3e-4}, 2, "recipe")
        assert resolved[spec.global_overlap_param] == 3e-4 and resolved["rho_scope"] == "global"
    base, deltas = sample(2)
    overlap = GlobalOverlap(epsilon=1e-5, shared=(0, 0), unique=(5, 5), total=10)
    out = get_method("ram_plus").merge(base, deltas, get_method("ram_plus").resolve({}, 2, "t"),
                                       TensorContext("x", 0, overlap))
    torch.testing.assert_close(out, run("ram", base, deltas))  # rho 0 everywhere -> lambda 1 -> RAM


def test_register_refuses_a_second_method_under_a_taken_name():
    """The table once silently kept the last of two same-named specs; mergekit's registry refuses them."""
    from evomerge.methods.registry import register

    table: dict = {}
    first = get_method("ties")
    assert register(first, table) is first and table == {"ties": first}
    impostor = dataclasses.replace(get_method("dare_ties"), name="ties")
    with pytest.raises(ValueError, match="merge method 'ties' is already registered"):
        register(impostor, table)
    assert table["ties"] is first  # the first registration stands
    with pytest.raises(ValueError, match="'linear' is already registered"):
        register(get_method("linear"))  # the global table too


def test_family_factory_spells_each_member_from_pruning_and_sign_election():
    """The six task-arithmetic relatives come from one factory; their parameters follow from how they prune."""
    from evomerge.methods import task_arithmetic as ta

    spec = ta.family_member("my_ties", ta.MAGNITUDE, sign_election=True, description="d", paper="p")
    assert [p.name for p in spec.params] == ["weight", "density", "normalize", "rescale", "lambda"]
    assert spec.merge.__name__ == "my_ties_merge" and not spec.randomized
    dare = ta.family_member("my_dare", ta.RANDOM, sign_election=False, description="d", paper="p")
    assert dare.randomized and dare.param("rescale").default is True and dare.param("rescale_mode")
    with pytest.raises(ValueError, match="unknown pruning 'topk'"):
        ta.family_member("x", "topk", sign_election=False, description="d", paper="p")
    # a factory-made member merges exactly as the registered method with the same configuration
    torch.manual_seed(0)
    base, deltas = torch.randn(8, 8), [torch.randn(8, 8) for _ in range(3)]
    params = get_method("ties").resolve({"density": 0.5, "weight": [0.3, 0.5, 0.9]}, 3, "test")
    ctx = TensorContext(name="w", seed=1)
    assert torch.equal(spec.merge(base, deltas, params, ctx), get_method("ties").merge(base, deltas, params, ctx))


PROPAGATING_PARAMS = [{}, {"weight": [1.0, 0.0, -2.5]}, {"weight": [0.0, 0.0, 1.0], "normalize": False},
                      {"weight": [0.5, 0.5, 0.0], "normalize": True}, {"lambda": 0.0}, {"lambda": -3.0}]


@pytest.mark.parametrize("name", [n for n in sorted(DEFAULTS) if get_method(n).nonfinite_propagates])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_method_that_says_nonfinite_propagates_turns_every_nan_or_inf_operand_into_a_nonfinite_entry(name, value):
    """The engine checks such a method's merged blocks instead of its operands (MethodSpec.nonfinite_propagates):
    a NaN/inf in the base or in any task vector, at any entry, must reach that entry of the merge for every
    parameter value, zero weights and lambda 0 included (0 * inf is NaN)."""
    spec = get_method(name)
    g = torch.Generator().manual_seed(11)
    for params in PROPAGATING_PARAMS:
        params = {k: v for k, v in params.items() if any(p.name == k for p in spec.params)}
        for operand in range(4):  # 0: the base, 1-3: a task vector
            base, deltas = sample(3, seed=operand)
            entry = int(torch.randint(base.numel(), (1,), generator=g))
            (base if operand == 0 else deltas[operand - 1]).view(-1)[entry] = value
            out = run(name, base, deltas, params)
            assert not torch.isfinite(out.view(-1)[entry]), (name, params, operand)


def test_only_methods_that_add_every_entry_skip_the_operand_check():
    assert {n for n in DEFAULTS if get_method(n).nonfinite_propagates} == {"linear", "task_arithmetic"}


@pytest.mark.parametrize("method,params,message", [
    ("task_arithmetic", {"lambda": 1e39}, "parameter 'lambda' = 1e\\+39 does not fit float32"),
    ("ties", {"weight": [1.0, -4e38, 1.0]}, "parameter 'weight' = -4e\\+38 does not fit float32"),
    # each parameter fits, their product does not
    ("task_arithmetic", {"lambda": 1e38, "weight": 100.0}, "coefficient of model 1 .* does not fit float32"),
    ("dare_linear", {"density": 1e-30, "weight": 1e10}, "coefficient of model 1 .* does not fit float32"),
    ("linear", {"weight": [3e38, -3e38, 1e-7]}, "coefficient of model 1 .* does not fit float32"),
    ("linear", {"weight": [3e38, 3e38, 1.0], "normalize": False}, "sum of the weights .* does not fit float32"),
])
def test_parameters_whose_arithmetic_overflows_float32_are_recipe_errors(method, params, message):
    """Found by feeding extreme parameters: torch failed with 'value cannot be converted to type float without
    overflow' from inside the merge. Now a parameter beyond float32 is refused when the recipe is read, and a
    product of parameters (weight x lambda / weight sum, DARE's 1 / density) when the merge meets it."""
    base, deltas = sample(3)
    with pytest.raises(RecipeError, match=message):
        run(method, base, deltas, params)
