"""Same checkpoints, same parameters: evomerge's methods give mergekit 0.1.5's tensors.

mergekit runs in-process on tiny fp32 Qwen2 checkpoints; evomerge's method is applied tensor by tensor
to the same safetensors (no engine involved), and every output tensor is compared.
DARE draws its masks from torch's global RNG in mergekit and from a per-tensor generator here, so
masks cannot coincide: DARE is compared exactly at density 1 and statistically below it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.methods.registry import get_method
from evomerge.methods.spec import TensorContext

pytestmark = pytest.mark.mergekit

ATOL = 1e-6
AGENTS = ("coding", "tool_use", "memory")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    assert tensors, f"no safetensors in {path}"
    return tensors


def run_mergekit(config: dict, out_dir: Path, seed: int | None = None) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(lazy_unpickle=True, copy_tokenizer=False, write_model_card=False, quiet=True,
                           random_seed=seed)
    run_merge(MergeConfiguration.model_validate({"dtype": "float32", **config}), out_path=str(out_dir), options=options)
    return load_checkpoint(out_dir)


def run_evomerge(method: str, base: Path | None, models: list[Path], params: dict, seed: int = 0):
    spec = get_method(method)
    resolved = spec.resolve(params, len(models), "test")
    states = [load_checkpoint(m) for m in models]
    base_state = load_checkpoint(base) if base is not None else None
    out = {}
    for name in states[0]:
        # the engine's convention: without a base, the reference is zeros and the task vectors are the models
        if base_state is not None:
            ref = base_state[name].float()
        else:
            ref = torch.zeros_like(states[0][name], dtype=torch.float32)
        deltas = [s[name].float() - ref for s in states]
        out[name] = spec.merge(ref, deltas, resolved, TensorContext(name=name, seed=seed))
    return out


def model_entries(paths, **per_model):
    entries = []
    for i, p in enumerate(paths):
        params = {k: v[i] for k, v in per_model.items()}
        entries.append({"model": str(p), **({"parameters": params} if params else {})})
    return entries


def assert_same_tensors(ours: dict, theirs: dict, atol: float = ATOL):
    assert set(ours) == set(theirs)
    for name, expected in theirs.items():
        torch.testing.assert_close(ours[name], expected.float(), atol=atol, rtol=0, msg=lambda m: f"{name}: {m}")


def agent_paths(family):
    return [family[a] for a in AGENTS]


CASES = [
    # (evomerge method, mergekit method, evomerge params, mergekit shared params, per-model params)
    ("task_arithmetic", "task_arithmetic", {"weight": [0.6, 0.4, 0.8]}, {}, {"weight": [0.6, 0.4, 0.8]}),
    ("task_arithmetic", "task_arithmetic", {"weight": [0.6, -0.4, 0.8], "normalize": True, "lambda": 0.7},
     {"normalize": True, "lambda": 0.7}, {"weight": [0.6, -0.4, 0.8]}),
    ("ties", "ties", {"weight": [1.0, 0.5, 0.7], "density": [0.3, 0.5, 0.7]}, {},
     {"weight": [1.0, 0.5, 0.7], "density": [0.3, 0.5, 0.7]}),
    ("ties", "ties", {"weight": [1.0, -0.5, 0.7], "density": 0.2, "normalize": False, "lambda": 1.3, "rescale": True},
     {"normalize": False, "lambda": 1.3, "rescale": True}, {"weight": [1.0, -0.5, 0.7], "density": [0.2] * 3}),
    ("breadcrumbs", "breadcrumbs", {"weight": [0.5, 0.3, 0.2], "density": 0.3, "gamma": 0.05}, {},
     {"weight": [0.5, 0.3, 0.2], "density": [0.3] * 3, "gamma": [0.05] * 3}),
    ("breadcrumbs", "breadcrumbs", {"weight": 1.0, "density": [0.9, 0.6, 0.97], "gamma": [0.05, 0.01, 0.1],
                                    "normalize": True, "rescale": True},
     {"normalize": True, "rescale": True},
     {"weight": [1.0] * 3, "density": [0.9, 0.6, 0.97], "gamma": [0.05, 0.01, 0.1]}),
    ("breadcrumbs_ties", "breadcrumbs_ties", {"weight": [0.5, 0.3, 0.2], "density": 0.4, "gamma": 0.02}, {},
     {"weight": [0.5, 0.3, 0.2], "density": [0.4] * 3, "gamma": [0.02] * 3}),
    # counts at the edges: k = max(1, int(0.001 * n)); a band without outliers (gamma 0), one without a
    # bottom (density + gamma > 1)
    ("ties", "ties", {"weight": [0.4, 0.9, 0.6], "density": [0.001, 0.7, 0.999]}, {},
     {"weight": [0.4, 0.9, 0.6], "density": [0.001, 0.7, 0.999]}),
    ("breadcrumbs", "breadcrumbs", {"weight": [0.5, 0.3, 0.2], "density": [0.3, 0.95, 0.5], "gamma": [0.0, 0.1, 0.6]},
     {}, {"weight": [0.5, 0.3, 0.2], "density": [0.3, 0.95, 0.5], "gamma": [0.0, 0.1, 0.6]}),
    ("breadcrumbs_ties", "breadcrumbs_ties", {"weight": [0.5, -0.3, 0.2], "density": [0.2, 0.5, 0.7],
                                              "gamma": [0.1, 0.01, 0.05], "normalize": True, "rescale": True},
     {"normalize": True, "rescale": True},
     {"weight": [0.5, -0.3, 0.2], "density": [0.2, 0.5, 0.7], "gamma": [0.1, 0.01, 0.05]}),
    # DARE at density 1: no drop, so mergekit's global-RNG masks and ours coincide
    ("dare_linear", "dare_linear", {"weight": [0.6, 0.4, 0.8], "density": 1.0}, {}, {"weight": [0.6, 0.4, 0.8]}),
    ("dare_ties", "dare_ties", {"weight": [0.6, -0.4, 0.8], "density": 1.0, "normalize": True},
     {"normalize": True}, {"weight": [0.6, -0.4, 0.8]}),
    ("ram", "ram", {}, {}, {}),
    ("ram", "ram", {"epsilon": 1e-3}, {"epsilon": 1e-3}, {}),
    ("ram_plus", "ramplus_tl", {"rho_scope": "tensor", "alpha": 0.2, "epsilon": 1e-3}, {"epsilon": 1e-3}, {}),
    ("ram_plus", "ramplus_tl", {"rho_scope": "tensor", "r": 0.3, "alpha": 2.0}, {"r": 0.3, "alpha": 2.0}, {}),
]


@pytest.mark.parametrize("ours,theirs,params,shared,per_model", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_task_vector_methods_match_mergekit(tiny_family, tmp_path, ours, theirs, params, shared, per_model):
    models = agent_paths(tiny_family)
    config = {"merge_method": theirs, "base_model": str(tiny_family["base"]),
              "models": model_entries(models, **per_model), "parameters": shared}
    assert_same_tensors(run_evomerge(ours, tiny_family["base"], models, params), run_mergekit(config, tmp_path / "mk"))


def test_linear_matches_mergekit(tiny_family, tmp_path):
    models = [tiny_family["base"], *agent_paths(tiny_family)]
    weights = [0.1, 0.6, 0.4, 0.8]
    for normalize in (True, False):
        config = {"merge_method": "linear", "models": model_entries(models, weight=weights),
                  "parameters": {"normalize": normalize}}
        ours = run_evomerge("linear", None, models, {"weight": weights, "normalize": normalize})
        assert_same_tensors(ours, run_mergekit(config, tmp_path / f"mk{normalize}"))
        # with a recipe base, the base is only the reference: same merge of the same models
        assert_same_tensors(run_evomerge("linear", tiny_family["base"], models, {"weight": weights,
                                                                                 "normalize": normalize}), ours)


@pytest.fixture(scope="module")
def far_apart_family(tmp_path_factory, tokenizer):
    """Two models whose tensors are far from collinear, so SLERP takes its spherical branch."""
    from evomerge.tiny_checkpoints import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("far"), agents=("other",), densities=(1.0,),
                             delta_std=0.05, tokenizer=tokenizer, seed=3)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.75, 1.0])
def test_slerp_matches_mergekit(far_apart_family, tmp_path, t):
    first, second = far_apart_family["base"], far_apart_family["other"]
    config = {"merge_method": "slerp", "base_model": str(first), "models": [{"model": str(second)}],
              "parameters": {"t": t}}
    theirs = run_mergekit(config, tmp_path / "mk")
    assert_same_tensors(run_evomerge("slerp", None, [first, second], {"t": t}), theirs)
    if 0 < t < 1:  # the spherical branch was really exercised (not only the collinear fallback)
        a, b = load_checkpoint(first), load_checkpoint(second)
        cosines = [torch.nn.functional.cosine_similarity(a[n].reshape(1, -1), b[n].reshape(1, -1)).item() for n in a]
        assert min(cosines) < 0.9995


def test_dare_matches_mergekit_statistically(tiny_family, tmp_path):
    """One model, so the merged delta is exactly the dropped-and-rescaled task vector in both tools."""
    density = 0.3
    agent = tiny_family["tool_use"]
    config = {"merge_method": "dare_linear", "base_model": str(tiny_family["base"]),
              "models": model_entries([agent], weight=[1.0], density=[density])}
    base, task = load_checkpoint(tiny_family["base"]), load_checkpoint(agent)
    theirs = run_mergekit(config, tmp_path / "mk", seed=0)
    for mode in ("l1", "inverse_density"):
        ours = run_evomerge("dare_linear", tiny_family["base"], [agent], {"density": density, "rescale_mode": mode})
        kept = {"ours": [0, 0], "mergekit": [0, 0]}
        for name, merged in (("ours", ours), ("mergekit", theirs)):
            for key in base:
                delta = task[key].float() - base[key].float()
                out = merged[key].float() - base[key].float()
                nonzero = delta != 0
                kept_here = out.ne(0) & nonzero
                kept[name][0] += int(kept_here.sum())
                kept[name][1] += int(nonzero.sum())
                assert not out[~nonzero].any(), "an entry the model never changed came out non-zero"
                if not kept_here.any():
                    continue
                if name == "mergekit" or mode == "l1":
                    # L1 norm matching: kept entries scaled so they carry the task vector's L1 norm
                    scale = delta.abs().sum() / delta[kept_here].abs().sum()
                else:
                    scale = 1 / density
                # `out` went through base + x - base in float32: compare at the base's rounding (~1e-7)
                torch.testing.assert_close(out[kept_here], delta[kept_here] * scale, rtol=0, atol=3e-7)
        for name, (k, n) in kept.items():
            # keep rate: binomial with n ~ 1e5 draws; 5 standard deviations
            sigma = (density * (1 - density) / n) ** 0.5
            assert abs(k / n - density) < 5 * sigma, (name, k / n)


def test_dare_l1_rescale_equals_mergekit_formula():
    """For a given mask, our `rescale_mode: l1` factor is mergekit's `rescaled_masked_tensor(..., l1)`."""
    from mergekit.sparsify import RescaleNorm, rescaled_masked_tensor

    from evomerge.methods.sparsify import l1_rescale, random_mask

    torch.manual_seed(0)
    delta = torch.randn(300, 70) * 1e-3
    keep = random_mask(delta, 0.4, seed=11)
    expected = rescaled_masked_tensor(delta, keep.float(), RescaleNorm.l1)
    pruned = delta * keep
    # the same float32 sums of |delta| in another order (vector_norm's reduction): a few ulp apart
    torch.testing.assert_close(pruned * l1_rescale(delta, pruned), expected, rtol=4e-6, atol=1e-12)


def test_mergekit_has_no_global_ram_plus():
    """mergekit 0.1.5 ships `ram` and the tensor-local `ramplus_tl` (default alpha 0.2), not the paper's
    whole-model RAM+; our `ram_plus` default (global rho, alpha 2) has no mergekit counterpart."""
    from mergekit.merge_methods.registry import get

    spec = get("ramplus_tl").spec
    assert {p.name: p.default for p in spec.parameters} == {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}
    with pytest.raises(RuntimeError):
        get("ram_plus")


LLAMA_CASES = [
    ("task_arithmetic", "task_arithmetic", {"weight": [0.6, 0.4, 0.8], "lambda": 0.9}, {"lambda": 0.9},
     {"weight": [0.6, 0.4, 0.8]}),
    ("ties", "ties", {"weight": [1.0, 0.5, 0.7]}, {}, {"weight": [1.0, 0.5, 0.7]}),  # density 1: election only
    ("dare_ties", "dare_ties", {"weight": 0.5, "density": 1.0}, {}, {"weight": [0.5] * 3}),
    ("ram", "ram", {}, {}, {}),
    ("ram_plus", "ramplus_tl", {"rho_scope": "tensor", "alpha": 0.2}, {}, {}),
]


@pytest.mark.parametrize("ours,theirs,params,shared,per_model", LLAMA_CASES,
                         ids=[c[0] for c in LLAMA_CASES])
def test_bf16_llama_checkpoints_match_mergekit(tiny_family_llama, tmp_path, ours, theirs, params, shared, per_model):
    """A second architecture with bf16 weights (computed in float32 by both tools). Magnitude pruning is
    left out: bf16 magnitudes tie often, and mergekit's unstable sorts leave ties unspecified (see
    test_bf16_magnitude_pruning_equals_mergekit_with_stable_sorts)."""
    models = agent_paths(tiny_family_llama)
    config = {"merge_method": theirs, "base_model": str(tiny_family_llama["base"]),
              "models": model_entries(models, **per_model), "parameters": shared}
    assert_same_tensors(run_evomerge(ours, tiny_family_llama["base"], models, params),
                        run_mergekit(config, tmp_path / "mk"))


class _StableSortTorch:
    """`torch` for mergekit.sparsify with stable sorts: mergekit's argsort / sort leave the order of equal
    magnitudes unspecified; made stable, they give the tie rule evomerge documents (methods/sparsify.py)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def argsort(input, dim=-1, descending=False):
        return torch.argsort(input, dim=dim, descending=descending, stable=True)

    @staticmethod
    def sort(input, dim=-1, descending=False):
        return torch.sort(input, dim=dim, descending=descending, stable=True)


# Sign election sums the weighted entries in another order than mergekit (positive and negative parts
# apart), so where bf16 entries nearly cancel, a total that is 0 in one order can be a rounding error
# away from it in the other, and the elected sign differs. Power-of-two weights keep these sums of
# bf16 differences exact, so only the pruning is compared in the *_ties cases.
BF16_PRUNING_CASES = [
    ("ties", {"weight": [1.0, 0.5, 0.25], "density": [0.3, 0.5, 0.2]}, {}),
    ("ties", {"weight": [1.0, -0.5, 0.25], "density": [0.2, 0.05, 0.6]}, {"rescale": True, "normalize": False}),
    ("breadcrumbs", {"weight": [1.0, 0.5, 0.7], "density": [0.6, 0.5, 0.7], "gamma": [0.05, 0.02, 0.1]}, {}),
    ("breadcrumbs", {"weight": [1.0, 0.5, 0.7], "density": [0.8, 0.2, 0.9], "gamma": [0.3, 0.01, 0.0]},
     {"rescale": True}),
    ("breadcrumbs_ties", {"weight": [0.5, 0.25, 0.125], "density": [0.4, 0.3, 0.5], "gamma": [0.02, 0.05, 0.01]},
     {}),
]


@pytest.mark.parametrize("method,per_model,shared", BF16_PRUNING_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BF16_PRUNING_CASES)])
def test_bf16_magnitude_pruning_equals_mergekit_with_stable_sorts(tiny_family_llama, tmp_path, monkeypatch, method,
                                                                   per_model, shared):
    """bf16 magnitudes tie often (the test checks that its inputs do, at the thresholds). Exactly the
    k = max(1, int(density * n)) entries (Breadcrumbs: int(density * n)) that mergekit's code keeps when
    its sorts are stable are kept: every tensor equals mergekit's, ties included."""
    import mergekit.sparsify

    models = agent_paths(tiny_family_llama)
    config = {"merge_method": method, "base_model": str(tiny_family_llama["base"]),
              "models": model_entries(models, **per_model), "parameters": shared}
    monkeypatch.setattr(mergekit.sparsify, "torch", _StableSortTorch())
    theirs = run_mergekit(config, tmp_path / "mk")
    monkeypatch.undo()
    assert_same_tensors(run_evomerge(method, tiny_family_llama["base"], models, {**per_model, **shared}), theirs)

    base = load_checkpoint(tiny_family_llama["base"])
    tied_beyond_the_cut = 0  # entries that "keep every magnitude tied with the threshold" would have added
    for t, state in enumerate(load_checkpoint(m) for m in models):
        for name in base:
            magnitude = (state[name].float() - base[name].float()).abs().reshape(-1)
            n = magnitude.numel()
            keep = int(per_model["density"][t] * n)
            if method == "ties":
                threshold = torch.kthvalue(magnitude, n - max(1, keep) + 1).values
                tied_beyond_the_cut += int((magnitude >= threshold).sum()) - max(1, keep)
            else:
                bottom = max(0, n - keep - int(per_model["gamma"][t] * n))
                if bottom > 0:
                    threshold = torch.kthvalue(magnitude, bottom + 1).values
                    tied_beyond_the_cut += int((magnitude >= threshold).sum()) - (n - bottom)
    assert tied_beyond_the_cut > 0
