from evomerge.recipe import layer_index, module_type, parse_layers

import pytest

from evomerge.errors import RecipeError


def test_layer_index_and_module_type():
    assert layer_index("model.layers.7.mlp.up_proj.weight") == 7
    assert layer_index("model.embed_tokens.weight") is None
    assert module_type("model.layers.0.self_attn.q_proj.weight") == "attn"
    assert module_type("model.layers.0.self_attn.q_norm.weight") == "norm"
    assert module_type("model.layers.0.mlp.down_proj.weight") == "mlp"
    assert module_type("model.layers.0.input_layernorm.weight") == "norm"
    assert module_type("model.norm.weight") == "norm"
    assert module_type("model.embed_tokens.weight") == "embed"
    assert module_type("lm_head.weight") == "lm_head"


def test_parse_layers():
    assert parse_layers("0-2,5") == {0, 1, 2, 5}
    assert parse_layers(3) == {3}
    assert parse_layers([1, 4]) == {1, 4}
    assert parse_layers(None) is None
    for bad in ("5-2", "a-b", [-1], True):
        with pytest.raises(RecipeError):
            parse_layers(bad)


def test_yaml_reads_exponent_floats_without_a_dot(tmp_path, tiny_family):
    from evomerge.recipe import MergeRecipe

    path = tmp_path / "r.yaml"
    path.write_text(f"base: {tiny_family['base']}\nmodels: [{tiny_family['coding']}]\n"
                    "method: ram\nparameters: {epsilon: 1e-5}\n")
    assert MergeRecipe.from_yaml(path).parameters["epsilon"] == 1e-5
