"""The transformers backend: batched `generate` with left padding, and an in-place weight swap.

One resident model serves every suite of a search; `swap_weights` copies a merged candidate's
tensors into it, so no candidate pays a model load. Decoding is fully set by `GenerationSettings`
(the checkpoint's sampling defaults such as top_k or repetition_penalty are neutralised), so the
same settings decode the same way here and in the vLLM backend.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from evaluators.errors import BackendError
from evaluators.progress import tqdm_disabled_by_env, transformers_bars
from evaluators.protocol import GenerationSettings, Request

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU by default (bf16 is emulated there, 4-8x slower); bfloat16 on a GPU."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return getattr(torch, _DTYPES[dtype])


class HFGenerator:
    """A `Generator` and `WeightSwappable` over a transformers causal LM kept resident on one device.

    `model` is a checkpoint directory (or hub name, when a hub is reachable) or a loaded
    `PreTrainedModel` (then pass its `tokenizer`, or it is loaded from the model's `name_or_path`;
    the object is used in place, keeps its device and dtype unless given, and runs in eval mode
    during `generate` only, so a caller's training model returns to its own mode afterwards).
    Requests are sorted by length and generated `batch_size` rows at a time, left padded. Greedy
    when temperature is 0; otherwise sampled from a generator seeded by `settings.seed`, so the same
    requests with the same seed give the same completions (the draw depends on the batch a request
    lands in, so change neither the request list nor batch_size between runs you compare).
    """

    name = "hf"

    def __init__(self, model: str | Path | Any, tokenizer: Any = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, batch_size: int = 16, trust_remote_code: bool = False,
                 progress: bool = True):
        if batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        # a per-call bar and transformers' loading bar; a search turns them off (it shows its own); TQDM_DISABLE too
        self.progress = progress and not tqdm_disabled_by_env()
        loading = isinstance(model, (str, Path))
        # A model object keeps its device and dtype unless told otherwise (it may be a caller's training model).
        self.device = resolve_device(device) if loading or device is not None else model.device
        self.dtype = resolve_dtype(dtype, self.device) if loading or dtype is not None else model.dtype
        if loading:
            started = time.perf_counter()
            source = str(model)
            if Path(source).exists() and not (Path(source) / "config.json").is_file():
                raise BackendError(f"{source} is not a Hugging Face checkpoint directory (no config.json)")
            try:
                with transformers_bars(self.progress):  # its "Loading weights" bar, once per load
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype,
                                                                 trust_remote_code=trust_remote_code)
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise BackendError(f"cannot load the model or tokenizer from {source}: {exc}") from exc
            log.info("loaded %s (%s) on %s in %s, %.1f s", source, type(model).__name__, self.device, self.dtype,
                     time.perf_counter() - started)
        else:
            model = model.to(self.dtype)
            if tokenizer is None:
                source = getattr(model, "name_or_path", "")
                if not source:
                    raise BackendError("HFGenerator got a model object without a tokenizer: pass tokenizer=")
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        self.model = model.to(self.device)
        if loading:
            self.model.eval()
        self.tokenizer = tokenizer
        self.source = str(getattr(model, "name_or_path", "") or type(model).__name__)
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        self.last_usage: dict[str, float] = {}
        self._stale: set[int] = set()  # storage addresses not copied again since a swap failed midway

    # -- prompts ---------------------------------------------------------------------------------
    def render(self, request: Request) -> str:
        """The text the model sees: the prompt itself, or chat messages through the chat template."""
        if isinstance(request.prompt, str):
            return request.prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"request {request.id!r} is a chat prompt but the tokenizer of {self.source} has no "
                               "chat template; use a plain-text prompt format (suite option chat: false)")
        return self.tokenizer.apply_chat_template([dict(m) for m in request.prompt], tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, request: Request) -> list[int]:
        # Chat templates write their own BOS; plain text gets the tokenizer's special tokens.
        chat = not isinstance(request.prompt, str)
        return list(self.tokenizer(self.render(request), add_special_tokens=not chat)["input_ids"])

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], settings: GenerationSettings) -> list[list[str]]:
        if self._stale:
            raise BackendError(f"the resident model {self.source} holds a partial swap ({len(self._stale)} "
                               "tensor(s) not copied since a swap failed midway); swap a complete set of "
                               "weights in before generating")
        start = time.perf_counter()
        encoded = [self.encode(r) for r in requests]
        sampling = settings.temperature > 0
        rows_per_request = settings.n if sampling else 1  # greedy samples are all equal: decode once
        per_batch = max(1, self.batch_size // rows_per_request)
        # Longest first: similar lengths share a batch (little padding) and memory errors show at once.
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]), reverse=True)
        batches = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
        was_training = self.model.training
        self.model.eval()  # no dropout while decoding
        try:
            outputs, completion_tokens = self._generate_batches(encoded, batches, settings, rows_per_request)
        finally:
            self.model.train(was_training)
        self.last_usage = {"requests": len(requests), "prompt_tokens": sum(map(len, encoded)),
                           "completion_tokens": completion_tokens, "seconds": time.perf_counter() - start}
        return outputs

    def _generate_batches(self, encoded: list[list[int]], batches: list[list[int]], settings: GenerationSettings,
                          rows_per_request: int) -> tuple[list[list[str]], int]:
        sampling = settings.temperature > 0
        outputs: list[list[str]] = [[] for _ in encoded]
        completion_tokens = 0
        # A private RNG stream seeded per call: the same seed gives the same samples, and the caller's
        # global RNG state is left as it was.
        fork_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
            torch.manual_seed(settings.seed)
            progress = tqdm(total=len(encoded), desc="generate (hf)", unit="req", leave=False,
                            disable=not self.progress or len(batches) < 2)
            for batch in batches:
                texts, n_tokens = self._generate_batch([encoded[i] for i in batch], settings, rows_per_request)
                completion_tokens += n_tokens
                for j, i in enumerate(batch):
                    samples = texts[j * rows_per_request:(j + 1) * rows_per_request]
                    outputs[i] = samples if sampling else samples * settings.n
                progress.update(len(batch))
            progress.close()
        return outputs, completion_tokens

    def _generate_batch(self, prompts: list[list[int]], settings: GenerationSettings,
                        rows_per_request: int) -> tuple[list[str], int]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every prompt ends at the same column
            if ids:
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = 1
        stopping = None
        if settings.stop:
            stopping = StoppingCriteriaList([_StopOnStrings(self.tokenizer, settings.stop, width)])
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(settings, rows_per_request),
            stopping_criteria=stopping,
        )
        texts, n_tokens = [], 0
        for row in out[:, width:].tolist():
            cut = next((k for k, tok in enumerate(row) if tok in self.eos_token_ids), len(row))
            n_tokens += min(cut + 1, len(row))
            texts.append(cut_at_stop(self.tokenizer.decode(row[:cut], skip_special_tokens=True), settings.stop))
        return texts, n_tokens

    def _generation_config(self, settings: GenerationSettings, rows_per_request: int):
        sampling = settings.temperature > 0
        # Explicit neutral values: a checkpoint's generation_config (repetition_penalty=1.05, top_k=20, ...)
        # would otherwise fill every field left unset, and HF would decode differently from vLLM.
        neutral: dict[str, Any] = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=1)
        if sampling:
            neutral.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0, typical_p=1.0,
                           epsilon_cutoff=0.0, eta_cutoff=0.0)
            if getattr(self.model.generation_config, "min_p", None) is not None:
                neutral["min_p"] = 0.0
        return GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=sampling, num_return_sequences=rows_per_request,
            eos_token_id=list(self.eos_token_ids), pad_token_id=self.pad_token_id, use_cache=True, **neutral,
        )

    # -- weight swap -----------------------------------------------------------------------------
    def swap_weights(self, weights: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor]) -> int:
        """Copy (checkpoint name, tensor) pairs into the resident model in place; return how many were copied.

        Names are the checkpoint's (the model's `state_dict` keys). Tied weights (embed_tokens and
        lm_head sharing storage) accept either name; giving both with different values is an error.
        A mapping is checked completely before anything is copied; an iterator (a streaming merge)
        is consumed and copied tensor by tensor (never listed: one merged tensor alive at a time), so a
        bad tensor late in it, or an error raised by the iterator itself, leaves a partial swap (the error
        says so). The model is then marked stale: `generate` refuses until every tensor has been copied
        again by later swaps, so no candidate is scored on a mix of two candidates' weights.
        Tensors not given keep their current values. Dtype and device are converted on copy.
        """
        targets = self.model.state_dict(keep_vars=True)
        if isinstance(weights, Mapping):
            for name, tensor in weights.items():
                self._check(targets, name, tensor, copied=0)
            pairs: Iterable = weights.items()
        else:
            pairs = weights
        written: dict[int, str] = {}  # storage address -> the name that wrote it (tied weights share one)
        copied = 0
        try:
            with torch.no_grad():
                for name, tensor in pairs:
                    target = self._check(targets, name, tensor, copied)
                    address = target.data_ptr()
                    if address in written and not torch.equal(target, tensor.to(target.device, target.dtype)):
                        raise BackendError(
                            f"swap_weights: {name!r} and {written[address]!r} are tied (one tensor in "
                            f"{self.source}) but were given different values; give only one of them"
                            f"{_partial(copied)}")
                    target.copy_(tensor)
                    written[address] = name
                    copied += 1
        except BaseException:
            if copied:  # a mix of the previous weights and part of these: every tensor must be copied again
                self._stale = {t.data_ptr() for t in targets.values()}
            raise
        self._stale -= written.keys()
        return copied

    def _check(self, targets: Mapping[str, Any], name: str, tensor: Any, copied: int):
        target = targets.get(name)
        if target is None:
            example = next(iter(targets), "")
            raise BackendError(f"swap_weights: {name!r} is not a tensor of the resident model {self.source} "
                               f"(names are checkpoint names such as {example!r}){_partial(copied)}")
        if tuple(tensor.shape) != tuple(target.shape):
            raise BackendError(f"swap_weights: {name!r} has shape {tuple(tensor.shape)} but the resident model "
                               f"{self.source} expects {tuple(target.shape)}{_partial(copied)}")
        return target


def _partial(copied: int) -> str:
    if copied == 0:
        return "; nothing was copied"
    return (f"; {copied} tensor(s) had already been copied, so the model now holds a partial swap: "
            "swap a complete, valid set of weights again (generate refuses until then)")


def _eos_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every id that ends a completion: the generation config's (often the chat turn end) and the tokenizer's."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in ([configured] if isinstance(configured, int) else list(configured or [])) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    if not ids:
        raise BackendError("the model has no end-of-sequence token (generation_config.eos_token_id and "
                           "tokenizer.eos_token are both unset); set one in the checkpoint")
    return tuple(ids)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text before the earliest stop string (the stop string itself is dropped)."""
    positions = [p for p in (text.find(s) for s in stops if s) if p >= 0]
    return text[:min(positions)] if positions else text


class _StopOnStrings(StoppingCriteria):
    """Ends a row once a stop string appears in its completion (only generated tokens are looked at).

    Each step decodes a short tail of every unfinished row: each token decodes to at least one
    byte, so a tail of (longest stop in bytes + 2) tokens contains any stop that just completed.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width
        self.window = max(len(s.encode("utf-8")) for s in self.stops) + 2
        self.done: list[bool] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        if self.done is None:
            self.done = [False] * input_ids.shape[0]
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        tails = input_ids[:, start:].tolist()
        for row, tail in enumerate(tails):
            if not self.done[row]:
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                self.done[row] = any(s in text for s in self.stops)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
