import math

import numpy as np
import pytest

from evomerge.errors import SearchSpaceError
from evomerge.search.codec import layer_blocks
from evomerge.search.space import SearchSpace
from evomerge.search.space_spec import list_bundled_spaces, load_space_spec
from evomerge.recipe import MergeRecipe

MODELS = ["/ckpt/coding", "/ckpt/tool_use", "/ckpt/memory"]
NAMES = ["coding", "tool_use", "memory"]


def bind(spec, num_layers=6, **kw):
    return SearchSpace(spec, base="/ckpt/base", models=MODELS, model_names=NAMES, num_layers=num_layers, **kw)


def test_bundled_spaces_exist_and_bind():
    assert {"ram_per_layer", "method_per_layer", "weights_densities"} <= set(list_bundled_spaces())
    ram = bind(load_space_spec("ram_per_layer"))
    assert [g.name for g in ram.genes][:3] == ["g0.ram_plus.epsilon", "g0.ram_plus.r", "g0.ram_plus.alpha"]
    assert len(ram.genes) == (4 + 1) * 3  # 4 layer groups + the non-layer group
    eps = ram.gene("g0.ram_plus.epsilon")
    assert eps.log and eps.low == 1e-7 and eps.high == 1e-3
    assert eps.from_unit(0.5) == pytest.approx(math.sqrt(1e-7 * 1e-3))  # log scale: the midpoint is geometric
    methods = bind(load_space_spec("method_per_layer")).gene("g2.method")
    assert methods.choices == ("ram", "ram_plus", "ties", "dare_ties", "task_arithmetic")
    wd = bind(load_space_spec("weights_densities"))
    assert "g1.dare_ties.weight[tool_use]" in [g.name for g in wd.genes]


def test_layer_groups_are_contiguous_blocks_capped_at_the_layer_count():
    assert layer_blocks(6, 4) == [(0, 0), (1, 2), (3, 3), (4, 5)]
    assert layer_blocks(2, 4) == [(0, 0), (1, 1)]
    blocks = layer_blocks(28, 5)
    assert blocks[0][0] == 0 and blocks[-1][1] == 27
    assert all(b[0] == a[1] + 1 for a, b in zip(blocks, blocks[1:]))


@pytest.mark.parametrize("name,split", [("ram_per_layer", False), ("method_per_layer", True),
                                        ("method_per_layer", False), ("weights_densities", False)])
def test_every_genome_decodes_to_a_valid_recipe_and_back(name, split):
    space = bind(load_space_spec(name, {"layer_groups": {"split_modules": split}}))
    rng = np.random.default_rng(0)
    for _ in range(40):
        values = space.sample(rng)
        recipe = space.decode(values)
        assert isinstance(recipe, MergeRecipe)  # validated against every method's ParamSpec
        assert space.decode(values).to_dict() == recipe.to_dict()  # deterministic
        again = space.decode(space.encode(recipe))
        assert again.to_dict() == recipe.to_dict()
        # the YAML form validates too (what `evomerge merge` reads)
        assert MergeRecipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()
    # corners of the box decode too
    for u in (0.0, 1.0):
        assert space.decode(space.from_vector(np.full(space.dimension, u)))


def test_groups_apply_to_the_right_tensors():
    space = bind(load_space_spec("method_per_layer", {"layer_groups": {"count": 2, "split_modules": True}}), num_layers=4)
    values = space.sample(np.random.default_rng(1))
    values.update({"g0.attn.method": "ties", "g0.mlp.method": "ram", "g1.attn.method": "task_arithmetic",
                   "g1.mlp.method": "dare_ties", "other.method": "ram_plus"})
    recipe = space.decode(values)
    assert recipe.rule_for("model.layers.1.self_attn.k_proj.weight").method == "ties"
    assert recipe.rule_for("model.layers.0.mlp.down_proj.weight").method == "ram"
    assert recipe.rule_for("model.layers.1.post_attention_layernorm.weight").method == "ram"  # norms go with the MLP
    assert recipe.rule_for("model.layers.3.self_attn.o_proj.weight").method == "task_arithmetic"
    assert recipe.rule_for("model.layers.2.mlp.up_proj.weight").method == "dare_ties"
    assert recipe.rule_for("lm_head.weight").method == "ram_plus"
    rule = recipe.rule_for("model.layers.0.self_attn.q_proj.weight")
    assert rule.parameters["density"] == (values["g0.attn.ties.density"],) * 3
    assert set(space.active_genes(values)) >= {"g0.attn.ties.density", "g0.mlp.ram.epsilon"}
    assert "g0.attn.ram.epsilon" not in space.active_genes(values)


def test_vector_encoding_round_trips_and_decodes_categories_by_argmax():
    space = bind(load_space_spec("method_per_layer"))
    values = space.sample(np.random.default_rng(2))
    back = space.from_vector(space.to_vector(values))
    for g in space.genes:
        if g.categorical:
            assert back[g.name] == values[g.name]
        else:
            assert back[g.name] == pytest.approx(values[g.name], rel=1e-12)
    x = np.zeros(space.dimension)
    x[1] = 0.9  # the second score of the first categorical gene (g0.method) wins
    assert space.from_vector(x)["g0.method"] == "ram_plus"
    with pytest.raises(SearchSpaceError):
        space.from_vector(np.zeros(3))


def test_grid_genes_decode_to_grid_points():
    space = bind(load_space_spec("ram_per_layer"))
    eps = space.gene("g0.ram_plus.epsilon")
    assert eps.grid == 33
    grid = {eps.from_unit(k / 32) for k in range(33)}
    assert eps.snap(1.1e-5) == pytest.approx(1e-5) and eps.snap(1.1e-5) in grid
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(30):
        recipe = space.decode(space.sample(rng))
        seen |= {ov.parameters["epsilon"] for ov in recipe.overrides} | {recipe.parameters["epsilon"]}
        assert recipe.rule_for("model.layers.5.mlp.up_proj.weight").parameters["r"] not in grid  # r has no grid
    assert seen <= grid


def test_non_layer_tensors_can_share_a_layer_groups_genes():
    space = bind(load_space_spec("ram_per_layer", {"layer_groups": {"count": 2, "non_layer": "last"}}), num_layers=4)
    assert [g.group for g in space.genes].count("other") == 0
    values = space.sample(np.random.default_rng(3))
    recipe = space.decode(values)
    assert recipe.rule_for("model.embed_tokens.weight").parameters["r"] == values["g1.ram_plus.r"]


def test_encode_reads_a_hand_written_recipe():
    spec = load_space_spec({"name": "t", "layer_groups": {"count": 2},
                            "methods": {"ties": {"density": {"low": 0.1, "high": 1.0, "per_model": True},
                                                 "weight": {"low": 0.0, "high": 1.0},
                                                 "normalize": {"value": False}}}})
    space = bind(spec, num_layers=4)
    recipe = MergeRecipe(base="/ckpt/base", models=MODELS, method="ties",
                         parameters={"density": [0.2, 0.5, 0.9], "weight": 0.7, "normalize": False},
                         overrides=[{"layers": "2-3", "method": "ties",
                                     "parameters": {"density": 0.3, "weight": 0.4, "normalize": False}}])
    values = space.encode(recipe)
    assert values["g0.ties.density[tool_use]"] == 0.5 and values["g1.ties.density[memory]"] == 0.3
    assert values["g1.ties.weight"] == 0.4 and values["other.ties.weight"] == 0.7
    wrong = MergeRecipe(base="/ckpt/base", models=MODELS, method="task_arithmetic")
    with pytest.raises(SearchSpaceError, match="does not search"):
        space.encode(wrong)
    out_of_range = recipe.model_copy(update={"parameters": {"density": 0.05, "weight": 0.7, "normalize": False}})
    with pytest.raises(SearchSpaceError, match="outside"):
        space.encode(MergeRecipe.from_dict(out_of_range.to_dict()))


@pytest.mark.parametrize("methods,message", [
    ({"nonsense": {}}, "unknown merge method"),
    ({"ties": {"densty": {"low": 0.1, "high": 1}}}, "no parameter 'densty'"),
    ({"ties": {"density": {"low": 0.1, "high": 1.5}}}, "outside its valid range"),
    ({"ties": {"density": {"low": 0.0, "high": 1.0}}}, "outside its valid range"),  # density must be > 0
    ({"ram": {"epsilon": {"low": 0.0, "high": 1e-3, "scale": "log"}}}, "log-scale gene needs low > 0"),
    ({"ties": {"weight": {}}}, "write 'low' and 'high'"),
    ({"ram_plus": {"r": {"low": 0.0, "high": 0.5, "per_model": True}}}, "takes one value for all models"),
    ({"ram_plus": {"rho_scope": {"value": "nope"}}}, "must be one of"),
    ({"ties": {"weight": {"low": 0.1, "high": 1.0}}}, "divided out by normalize=true"),
    ({"linear": {"weight": {"low": 0.1, "high": 1.0}, "normalize": {"value": True}}}, "divided out"),
])
def test_invalid_spaces_are_refused_with_the_key_at_fault(methods, message):
    spec = load_space_spec({"name": "bad", "methods": methods})
    with pytest.raises(SearchSpaceError, match=message):
        bind(spec)


def test_space_files_are_checked():
    with pytest.raises(SearchSpaceError, match="no bundled search space"):
        load_space_spec("no_such_space")
    with pytest.raises(SearchSpaceError, match="methods"):
        load_space_spec({"name": "x", "methods": {}})


def test_decoded_genomes_merge_on_the_tiny_family(tiny_family):
    """Decoding is valid for the engine too: random genomes of the method space merge to finite tensors."""
    import torch

    from evomerge.engine import ResidentMerger

    models = {a: str(tiny_family[a]) for a in NAMES}
    spec = load_space_spec("method_per_layer", {"layer_groups": {"split_modules": True}})
    space = SearchSpace.for_checkpoints(spec, str(tiny_family["base"]), models)
    assert space.num_layers == 2 and len(space.layer_groups) == 4
    merger = ResidentMerger(str(tiny_family["base"]), list(models.values()))
    rng = np.random.default_rng(4)
    for _ in range(3):
        state = merger.merge_state_dict(space.decode(space.sample(rng)))
        assert all(torch.isfinite(t).all() for t in state.values())
