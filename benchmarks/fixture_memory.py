"""Peak memory of the fixture generator on one preset's largest tensor (the embedding), beyond the process
that imports it: VmHWM growth (peak reset through /proc/self/clear_refs) while the base and every agent's
copy are generated into the two reused bf16 buffers, as write_fixture does (writes left out).

  PYTHONPATH=. python benchmarks/fixture_memory.py --preset 0.5b
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from proc_memory import status_bytes  # noqa: E402 (after the environment is set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="0.5b")
    args = parser.parse_args()
    import torch

    from evomerge.fixture import FixtureSpec, fill_agent, fill_base, paper_agents, qwen2_tensors

    spec = FixtureSpec(args.preset, paper_agents(3))
    biggest = max(qwen2_tensors(spec.shape), key=lambda t: t.numel)
    tensor_bytes = biggest.numel * 2
    rss = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = torch.empty(biggest.numel, dtype=torch.bfloat16)
    agent = torch.empty(biggest.numel, dtype=torch.bfloat16)
    fill_base(spec, biggest, base)
    for a in spec.agents:
        fill_agent(spec, biggest, base, a, agent)
    extra = status_bytes("VmHWM") - rss
    print(f"{args.preset}: {biggest.name} {list(biggest.shape)} = {tensor_bytes / 2**20:.1f} MiB of bf16; "
          f"peak growth {extra / 2**20:.1f} MiB = {extra / tensor_bytes:.2f} x one tensor "
          f"(process before: {rss / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
