"""Kept-count excess of TIES (magnitude_prune) and Breadcrumbs (outlier_band_prune) on a zoo: kept / k per
tensor and agent. Usage: python benchmarks/prune_counts.py ZOO_DIR [DENSITY] (docs/results.md)."""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from evomerge.methods.sparsify import magnitude_prune, outlier_band_prune

zoo = Path(sys.argv[1])
density = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
gamma = 0.01
base = load_file(zoo / "base" / "model.safetensors")
worst = (0.0, None)
worst_band = (0.0, None)
rows = []
for agent in ("coding", "tool_use", "memory"):
    state = load_file(zoo / agent / "model.safetensors")
    for name, b in base.items():
        if not b.is_floating_point():
            continue
        delta = state[name].float() - b.float()
        n = delta.numel()
        k = max(1, int(density * n))
        nnz = int(delta.count_nonzero())
        if nnz < k:  # kept zeros are invisible: the ratio says nothing
            continue
        kept = int(magnitude_prune(delta, density).count_nonzero())
        rows.append((kept / k, agent, name, n, k, kept))
        worst = max(worst, (kept / k, f"{agent} {name} n={n} k={k} kept={kept}"), key=lambda w: w[0])
        band_n = int(density * n)
        band = outlier_band_prune(delta, density, gamma)
        lower_rank = n - band_n - int(gamma * n)  # band entries are non-zero when the band's bottom is non-zero
        if torch.kthvalue(delta.abs().reshape(-1), max(1, lower_rank)).values > 0:
            kb = int(band.count_nonzero())
            worst_band = max(worst_band, (kb / band_n, f"{agent} {name} n={n} band={band_n} kept={kb}"),
                             key=lambda w: w[0])
ratios = sorted(r[0] for r in rows)
print(f"density {density}: {len(rows)} (agent, tensor) pairs with >= k non-zeros")
print(f"TIES max kept/k = {worst[0]:.4f} ({worst[1]})")
print(f"TIES tensors with kept > k: {sum(r > 1 for r in ratios)}; median kept/k {ratios[len(ratios)//2]:.4f}")
for r in sorted(rows, reverse=True)[:8]:
    print(f"  {r[0]:.3f}  {r[1]:9s} {r[2]}  n={r[3]} k={r[4]} kept={r[5]}")
print(f"Breadcrumbs (gamma {gamma}) max kept/band = {worst_band[0]:.4f} ({worst_band[1]})")
