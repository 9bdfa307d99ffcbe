"""Linear and SLERP: methods over the models themselves (the base is only a reference)."""

from __future__ import annotations

import math

import pytest
import torch

from evomerge.errors import RecipeError
from evomerge.methods.registry import get_method
from evomerge.methods.slerp import slerp
from evomerge.methods.spec import TensorContext

CTX = TensorContext(name="lm_head.weight", seed=0)


def merge(method, params, models, reference=None):
    """Run a method the way the engine does: task vectors against a reference (default zeros)."""
    spec = get_method(method)
    reference = torch.zeros_like(models[0]) if reference is None else reference
    deltas = [m - reference for m in models]
    return spec.merge(reference, deltas, spec.resolve(params, len(models), "test"), CTX)


M1 = torch.tensor([1.0, 2.0])
M2 = torch.tensor([3.0, 6.0])


def test_linear_weighted_average_and_sum():
    torch.testing.assert_close(merge("linear", {"weight": [1.0, 3.0]}, [M1, M2]), torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(merge("linear", {"weight": [1.0, 3.0], "normalize": False}, [M1, M2]),
                               torch.tensor([10.0, 20.0]))
    torch.testing.assert_close(merge("linear", {}, [M1, M2]), torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_does_not_depend_on_the_reference(normalize):
    params = {"weight": [0.2, 0.7], "normalize": normalize}
    want = merge("linear", params, [M1, M2])
    for reference in (M1, torch.tensor([-5.0, 8.0])):
        torch.testing.assert_close(merge("linear", params, [M1, M2], reference), want, rtol=1e-6, atol=1e-6)


def test_linear_refuses_to_normalize_by_a_zero_weight_sum():
    with pytest.raises(RecipeError, match="sum of the weights"):
        get_method("linear").resolve({"weight": [1.0, -1.0]}, 2, "recipe")
    get_method("linear").resolve({"weight": [1.0, -1.0], "normalize": False}, 2, "recipe")


def test_slerp_endpoints_and_midpoint():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(0.0, v0, v1), v0)
    torch.testing.assert_close(slerp(1.0, v0, v1), v1)
    h = math.sqrt(0.5)  # sin(pi/4) / sin(pi/2)
    torch.testing.assert_close(slerp(0.5, v0, v1), torch.tensor([h, h]))
    third = slerp(1 / 3, v0, v1)  # 30 degrees along the quarter circle
    torch.testing.assert_close(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


def test_slerp_interpolates_magnitudes_and_keeps_shape():
    v0, v1 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    h = math.sqrt(0.5)
    torch.testing.assert_close(slerp(0.5, v0, v1), torch.tensor([[2 * h, h]]))


def test_slerp_collinear_and_antipodal_fall_back_to_linear():
    torch.testing.assert_close(slerp(0.25, torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])),
                               torch.tensor([1.25, 2.5]))
    torch.testing.assert_close(slerp(0.5, torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])), torch.zeros(2))


def test_slerp_zero_vector_counts_as_unit_norm():
    h = math.sqrt(0.5)
    torch.testing.assert_close(slerp(0.5, torch.zeros(2), torch.tensor([1.0, 1.0])), torch.tensor([h, h]))


def test_slerp_method_goes_from_first_to_second_model_whatever_the_reference():
    v0, v1 = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, -0.5])
    for reference in (None, v0, torch.tensor([3.0, -2.0, 1.0])):
        torch.testing.assert_close(merge("slerp", {"t": 0.4}, [v0, v1], reference), slerp(0.4, v0, v1),
                                   rtol=1e-6, atol=1e-6)


def test_slerp_needs_exactly_two_models():
    for n in (1, 3):
        with pytest.raises(RecipeError, match="needs 2 model"):
            get_method("slerp").resolve({}, n, "recipe")
