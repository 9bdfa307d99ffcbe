"""Qwen2.5-shaped bf16 fixtures: a random base and RL-like agents, written as Hugging Face checkpoints.

For measuring memory and speed at a realistic size without downloading anything. Presets carry
Qwen2.5's real shapes (hidden, intermediate, layers, heads, kv heads, vocabulary, tied embeddings:
0.5B and 1.5B tie the LM head to the embedding, 7B does not); `tiny` is for tests.

The agents' task vectors follow the RAM paper's measurements of Qwen2.5-7B RL agents (Fig. 2,
arXiv 2601.13572, §2):
- density: the share of entries an agent changes (coding 3.2 %, tool use 46.2 %, memory 54.3 %;
  with five agents Fig. 7's search 24.2 % and AutoTIR 27.5 % join them);
- overlap: the tool and memory agents' masks overlap about as much as independent masks would,
  while the coding agent's changes sit mostly on entries the others also change (6.3 % of them
  unique against 24.6 % by chance). A "follower" agent therefore draws a share `follow` of its
  changes from the union of the independent agents' changes and the rest from outside it;
- size: a change is a few bf16 steps (1..max_steps units in the last place of the stored value),
  never below the paper's detection threshold 1e-5 (tiny weights step as many units as that takes),
  so `evomerge analyze` at epsilon 1e-5 measures the preset densities;
- direction: agents changing one entry move it the same way with probability `agree` (a shared
  random sign), otherwise independently.

Generation is streamed: per tensor, the base is drawn in chunks into one bf16 buffer, written, and
each agent's copy is derived chunk by chunk into a second buffer and written, so the peak memory is
about two bf16 copies of the largest tensor (the embedding) plus a few chunk-sized temporaries.
Every chunk has its own seeded generators: for a given seed (and the fixed CHUNK_ELEMENTS) the
bytes are always the same, whatever the order of writing.

`write_fixture(..., device="cuda")` draws on that device in large chunks (64M entries): the same
model of weights and changes, seconds instead of an hour for the 7B preset (benchmarks/gpu_check.py), with
bytes that depend on the device's random generator (the default CPU path is the reproducible one).
`FixtureSpec.layers` caps the decoder layers (e.g. 7B widths with 4 of its 28 layers, when disk, memory or
time cannot hold the whole model).

`headers_only` writes the same files with all-zero data as sparse files (no disk blocks, no
generation): enough for `evomerge plan`, which reads headers only, at the 7B preset (61 GB apparent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from evomerge.io.safetensors_format import CONFIG_FILE
from evomerge.io.staging import staged_output_dir
from evomerge.io.writer import PlannedTensor, ShardPlan, ShardWriter, parse_size, write_json
from evomerge.errors import EvomergeError

if TYPE_CHECKING:
    import torch

DETECT_EPSILON = 1e-5  # the paper's change threshold (Eq. 1)
_MIN_CHANGE = 3e-5  # a downward step past an exponent boundary halves: 3e-5 / 2 still exceeds 1e-5
CHUNK_ELEMENTS = 1 << 20  # 1M entries: a dozen temporaries of 4-8 MB each
DEVICE_CHUNK_ELEMENTS = 1 << 26  # on a device: a dozen temporaries of 256 MB (memory-bound kernels want size)
BF16_BYTES = 2


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers of a Qwen2 decoder (config.json keys in comments)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    max_window_layers: int
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# Qwen2.5 *-Instruct config.json values (Hugging Face Hub). The 7B's vocabulary is 152064, not 151936.
PRESETS: dict[str, ModelShape] = {
    # head_dim 32: vLLM's CPU attention rejects 16; 32768 positions: the paper's max_model_len
    "tiny": ModelShape(64, 128, 2, 2, 1, 1024, True, 2),
    "0.5b": ModelShape(896, 4864, 24, 14, 2, 151936, True, 21),
    "1.5b": ModelShape(1536, 8960, 28, 12, 2, 151936, True, 21),
    "7b": ModelShape(3584, 18944, 28, 28, 4, 152064, False, 28),
}


@dataclass(frozen=True)
class AgentSpec:
    name: str
    density: float  # share of entries changed
    follow: float = 0.0  # share of its changes drawn from the union of the independent agents' changes


# Fig. 2 (three Qwen2.5-7B agents) and Fig. 7 (five); `follow` gives the coding agent its measured unique share
PAPER_AGENTS: dict[int, tuple[AgentSpec, ...]] = {
    3: (AgentSpec("coding", 0.032, 0.937), AgentSpec("tool_use", 0.462), AgentSpec("memory", 0.543)),
    5: (AgentSpec("search", 0.242), AgentSpec("coding", 0.032, 0.984), AgentSpec("tool_use", 0.462),
        AgentSpec("autotir", 0.275), AgentSpec("memory", 0.543)),
}


def paper_agents(n: int) -> tuple[AgentSpec, ...]:
    """The paper's agents for n = 1..5: the three-agent set's first n, or the five-agent set for 4 and 5."""
    if not 1 <= n <= 5:
        raise EvomergeError(f"--agents {n}: the paper's densities cover 1 to 5 agents; give --densities for more")
    agents = PAPER_AGENTS[3][:n] if n <= 3 else PAPER_AGENTS[5][:n]
    if all(a.follow > 0 for a in agents):  # the coding agent alone has no one to follow: independent
        agents = tuple(AgentSpec(a.name, a.density) for a in agents)
    return agents


@dataclass(frozen=True)
class FixtureSpec:
    preset: str
    agents: tuple[AgentSpec, ...]
    seed: int = 0
    max_steps: int = 3  # a change is 1..max_steps bf16 units in the last place
    agree: float = 0.75  # probability that an agent's change takes the entry's shared direction
    weight_std: float = 0.02  # Qwen2's initializer_range
    shard_size: str = "5GB"  # the Hub's shard size for Qwen2.5 (the 7B comes in 4 files)
    with_tokenizer: bool = True
    headers_only: bool = False  # zero data in sparse files: for planning, not for merging
    layers: int | None = None  # decoder layers (None: the preset's); fewer keep its widths at a fraction of the size

    @property
    def shape(self) -> ModelShape:
        shape = PRESETS[self.preset]
        if self.layers is None:
            return shape
        return replace(shape, num_hidden_layers=self.layers, max_window_layers=min(shape.max_window_layers, self.layers))

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise EvomergeError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names) or "base" in names:
            raise EvomergeError(f"agent names must be distinct and not 'base': {names}")
        for a in self.agents:
            if not 0 < a.density < 1 or not 0 <= a.follow <= 1:
                raise EvomergeError(f"agent {a.name}: density must be in (0, 1) and follow in [0, 1]")
        if self.layers is not None and self.layers < 1:
            raise EvomergeError(f"layers must be at least 1, got {self.layers}")
        if not any(a.follow == 0 for a in self.agents) and any(a.follow > 0 for a in self.agents):
            raise EvomergeError("a following agent needs at least one independent agent (follow 0) to follow")


# -- tensors of a Qwen2 checkpoint ------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureTensor:
    name: str
    shape: tuple[int, ...]
    kind: str  # weight | bias | norm

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def qwen2_tensors(shape: ModelShape) -> list[FixtureTensor]:
    """Every tensor of a Qwen2ForCausalLM checkpoint, as save_pretrained names them (no lm_head when tied)."""
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.head_dim
    out = [FixtureTensor("model.embed_tokens.weight", (shape.vocab_size, h), "weight")]
    for i in range(shape.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [
            FixtureTensor(p + "input_layernorm.weight", (h,), "norm"),
            FixtureTensor(p + "self_attn.q_proj.weight", (h, h), "weight"),
            FixtureTensor(p + "self_attn.q_proj.bias", (h,), "bias"),
            FixtureTensor(p + "self_attn.k_proj.weight", (kv, h), "weight"),
            FixtureTensor(p + "self_attn.k_proj.bias", (kv,), "bias"),
            FixtureTensor(p + "self_attn.v_proj.weight", (kv, h), "weight"),
            FixtureTensor(p + "self_attn.v_proj.bias", (kv,), "bias"),
            FixtureTensor(p + "self_attn.o_proj.weight", (h, h), "weight"),
            FixtureTensor(p + "post_attention_layernorm.weight", (h,), "norm"),
            FixtureTensor(p + "mlp.gate_proj.weight", (shape.intermediate_size, h), "weight"),
            FixtureTensor(p + "mlp.up_proj.weight", (shape.intermediate_size, h), "weight"),
            FixtureTensor(p + "mlp.down_proj.weight", (h, shape.intermediate_size), "weight"),
        ]
    out.append(FixtureTensor("model.norm.weight", (h,), "norm"))
    if not shape.tie_word_embeddings:
        out.append(FixtureTensor("lm_head.weight", (shape.vocab_size, h), "weight"))
    return out


def parameter_count(shape: ModelShape) -> int:
    return sum(t.numel for t in qwen2_tensors(shape))


def qwen2_config(shape: ModelShape, bos_token_id: int | None, eos_token_id: int) -> dict:
    """config.json as the Qwen2.5 Instruct checkpoints have it."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id, "hidden_act": "silu", "hidden_size": shape.hidden_size,
        "initializer_range": 0.02, "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": shape.max_position_embeddings, "max_window_layers": shape.max_window_layers,
        "model_type": "qwen2", "num_attention_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers, "num_key_value_heads": shape.num_key_value_heads,
        "rms_norm_eps": shape.rms_norm_eps, "rope_theta": shape.rope_theta,
        "sliding_window": shape.max_position_embeddings, "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
        "vocab_size": shape.vocab_size,
    }


# The Qwen2.5 Instruct chat template (system default, tools in <tools>, calls in <tool_call> tags)
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)


# -- generation -------------------------------------------------------------------------------------


def _generator(seed: int, *key: object, device: "torch.device | str" = "cpu") -> "torch.Generator":
    import torch

    digest = hashlib.sha256("\x00".join(map(str, (seed, *key))).encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _chunks(numel: int, size: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, int, int]]:
    for i, start in enumerate(range(0, numel, size)):
        yield i, start, min(start + size, numel)


def base_chunk(spec: FixtureSpec, t: FixtureTensor, chunk: int, n: int,
               device: "torch.device | str" = "cpu") -> "torch.Tensor":
    """bf16 base values of one chunk: N(0, std) weights and biases, N(1, std) norm scales."""
    import torch

    g = _generator(spec.seed, "base", t.name, chunk, device=device)
    values = torch.randn(n, generator=g, device=device) * spec.weight_std
    if t.kind == "norm":
        values += 1.0
    return values.to(torch.bfloat16)


def _masks(spec: FixtureSpec, t: FixtureTensor, chunk: int, n: int, agent: AgentSpec,
           device: "torch.device | str" = "cpu") -> "torch.Tensor":
    """Which entries of the chunk `agent` changes (bool)."""
    import torch

    draw = torch.rand(n, generator=_generator(spec.seed, "mask", agent.name, t.name, chunk, device=device),
                      device=device)
    if agent.follow == 0:
        return draw < agent.density
    leaders = [a for a in spec.agents if a.follow == 0]
    union = torch.zeros(n, dtype=torch.bool, device=device)
    for a in leaders:
        union |= _masks(spec, t, chunk, n, a, device)
    p_union = 1.0 - math.prod(1.0 - a.density for a in leaders)
    inside = min(1.0, agent.density * agent.follow / p_union)
    outside = min(1.0, agent.density * (1.0 - agent.follow) / max(1e-12, 1.0 - p_union))
    return torch.where(union, draw < inside, draw < outside)


def agent_chunk(spec: FixtureSpec, t: FixtureTensor, chunk: int, base: "torch.Tensor", agent: AgentSpec) -> "torch.Tensor":
    """The agent's bf16 values of one chunk: the base moved by a few bf16 steps where its mask says."""
    import torch

    n, device = base.numel(), base.device
    mask = _masks(spec, t, chunk, n, agent, device)
    shared_up = torch.rand(n, generator=_generator(spec.seed, "sign", t.name, chunk, device=device), device=device) < 0.5
    g = _generator(spec.seed, "step", agent.name, t.name, chunk, device=device)
    own_up = torch.rand(n, generator=g, device=device) < 0.5
    takes_shared = torch.rand(n, generator=g, device=device) < spec.agree
    steps = torch.randint(1, spec.max_steps + 1, (n,), generator=g, dtype=torch.int32, device=device)
    up = torch.where(takes_shared, shared_up, own_up)  # the value's direction
    # Work on the bf16 bit pattern: magnitude bits +- k is exactly k units in the last place
    bits = base.view(torch.int16).to(torch.int32)
    negative = bits < 0
    magnitude = bits & 0x7FFF
    exponent = (magnitude >> 7) - 127 - 7  # the unit in the last place is 2**exponent (normal numbers)
    ulp = torch.ldexp(torch.ones(n, device=device), exponent.clamp(min=-133).to(torch.float32))
    small = steps.to(torch.float32) * ulp < _MIN_CHANGE  # a few units would stay below the paper's threshold
    grow = up ^ negative  # magnitude grows iff direction matches sign
    new_magnitude = torch.where(grow, magnitude + steps, magnitude - steps)
    # Tiny weights grow by a value, not by units: adding bf16 units crosses exponent boundaries (128 units
    # double the value), so "enough units" for a weight of 1e-8 once reached 1e31. |w| + (1.25..1.75) x
    # _MIN_CHANGE rounded to bf16 changes it by more than the threshold and by less than 2 x _MIN_CHANGE.
    lifted = (magnitude.to(torch.int16).view(torch.bfloat16).to(torch.float32)
              + _MIN_CHANGE * (1 + 0.25 * steps.to(torch.float32)))
    lifted_magnitude = lifted.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0x7FFF
    new_magnitude = torch.where(small, lifted_magnitude, new_magnitude)
    new_bits = torch.where(mask, (bits & ~0x7FFF) | new_magnitude, bits)
    new_bits = torch.where(new_bits >= 0x8000, new_bits - 0x10000, new_bits)  # back to int16's range
    return new_bits.to(torch.int16).view(torch.bfloat16)


def fill_base(spec: FixtureSpec, t: FixtureTensor, out: "torch.Tensor", chunk_size: int = CHUNK_ELEMENTS) -> None:
    """`out` (bf16, on any device) gets the base's values, drawn on out's device."""
    for chunk, start, end in _chunks(t.numel, chunk_size):
        out[start:end] = base_chunk(spec, t, chunk, end - start, out.device)


def fill_agent(spec: FixtureSpec, t: FixtureTensor, base: "torch.Tensor", agent: AgentSpec, out: "torch.Tensor",
               chunk_size: int = CHUNK_ELEMENTS) -> None:
    for chunk, start, end in _chunks(t.numel, chunk_size):
        out[start:end] = agent_chunk(spec, t, chunk, base[start:end], agent)


@dataclass(frozen=True)
class FixtureResult:
    paths: dict[str, Path]
    parameters: int
    bytes_per_model: int
    files: tuple[str, ...] = field(default=())


def write_fixture(spec: FixtureSpec, out_dir: str | Path, overwrite: bool = False,
                  device: "torch.device | str | None" = None) -> FixtureResult:
    """Write out_dir/base and out_dir/<agent> (each a complete Hugging Face checkpoint); return their paths.

    Each checkpoint is built in a temporary sibling renamed at the end, so a failure leaves no
    half-written model behind. `device` (e.g. "cuda") draws the values there in 64M-entry chunks:
    fast, but the bytes depend on that device's generator; None draws the reproducible CPU bytes.
    """
    import torch

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    names = ["base", *(a.name for a in spec.agents)]
    for name in names:
        if (out / name).exists() and not overwrite:
            raise EvomergeError(f"{out / name}: already exists; choose another directory or pass --overwrite")
    tensors = qwen2_tensors(spec.shape)
    plan = ShardPlan.build([PlannedTensor(t.name, "bfloat16", t.shape) for t in tensors], parse_size(spec.shard_size))
    side = _side_files(spec)
    max_numel = max(t.numel for t in tensors)
    chunk_size = CHUNK_ELEMENTS if device is None else DEVICE_CHUNK_ELEMENTS
    base_buf = torch.empty(max_numel, dtype=torch.bfloat16, device=device or "cpu")
    agent_buf = torch.empty(max_numel, dtype=torch.bfloat16, device=device or "cpu")
    with contextlib.ExitStack() as stack:
        dirs = {name: stack.enter_context(staged_output_dir(out / name, overwrite)) for name in names}
        if spec.headers_only:
            for name, d in dirs.items():
                files = _write_sparse(plan, d)
                for file_name, content in side.items():
                    (d / file_name).write_text(content)
                write_json(d / "fixture.json", {"role": name, "spec": _spec_dict(spec)})
            return FixtureResult({n: out / n for n in names}, parameter_count(spec.shape),
                                 sum(t.nbytes for t in plan.order), tuple(files))
        writers = {name: ShardWriter(d, plan) for name, d in dirs.items()}
        for w in writers.values():
            stack.callback(w.abort)
        for t in plan.order:
            info = next(x for x in tensors if x.name == t.name)
            base = base_buf[: info.numel]
            fill_base(spec, info, base, chunk_size)
            writers["base"].write(t.name, base.view(info.shape))
            for agent in spec.agents:
                values = agent_buf[: info.numel]
                fill_agent(spec, info, base, agent, values, chunk_size)
                writers[agent.name].write(t.name, values.view(info.shape))
        for name, d in dirs.items():
            files = writers[name].finish()
            for file_name, content in side.items():
                (d / file_name).write_text(content)
            write_json(d / "fixture.json", {"role": name, "spec": _spec_dict(spec)})
    return FixtureResult({n: out / n for n in names}, parameter_count(spec.shape),
                         sum(t.nbytes for t in plan.order), tuple(files))


def _write_sparse(plan: ShardPlan, directory: Path) -> tuple[str, ...]:
    """The plan's safetensors files with their real headers and all-zero data left as holes."""
    import struct

    from evomerge.io.safetensors_format import INDEX_FILE, SAFETENSORS_DTYPES

    tags = {name: tag for tag, (name, _) in SAFETENSORS_DTYPES.items()}
    names = plan.file_names()
    for shard, file_name in zip(plan.shards, names):
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in shard:
            header[t.name] = {"dtype": tags[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(directory / file_name, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)
    if len(names) > 1:
        weight_map = {t.name: names[i] for i, shard in enumerate(plan.shards) for t in shard}
        write_json(directory / INDEX_FILE, {"metadata": {"total_size": sum(t.nbytes for t in plan.order)},
                                            "weight_map": weight_map})
    return tuple(names)


def _spec_dict(spec: FixtureSpec) -> dict:
    data = asdict(spec)
    data["shape"] = asdict(spec.shape)
    return data


def _side_files(spec: FixtureSpec) -> dict[str, str]:
    """config.json, generation_config.json and (optionally) a small BPE tokenizer with Qwen2.5's chat template."""
    eos, bos = 151645, 151643  # Qwen2.5's <|im_end|> and <|endoftext|>
    files: dict[str, str] = {}
    if spec.with_tokenizer:
        import tempfile

        from evomerge.synthetic import build_tokenizer

        tok = build_tokenizer(vocab_size=min(1000, spec.shape.vocab_size))
        tok.chat_template = QWEN25_CHAT_TEMPLATE
        eos, bos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
        tok.eos_token = "<|im_end|>"
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            for f in Path(tmp).iterdir():
                files[f.name] = f.read_text()
    elif eos >= spec.shape.vocab_size:
        eos, bos = 0, 0
    files[CONFIG_FILE] = json.dumps(qwen2_config(spec.shape, bos, eos), indent=2) + "\n"
    files["generation_config.json"] = json.dumps(
        {"bos_token_id": bos, "eos_token_id": [eos, bos], "pad_token_id": bos, "do_sample": False}, indent=2) + "\n"
    return files


def measured_densities(base: "torch.Tensor", agents: Sequence["torch.Tensor"], epsilon: float = DETECT_EPSILON) -> list[float]:
    """Share of entries each agent changes by more than epsilon (for tests and reports)."""
    b = base.float()
    return [float(((a.float() - b).abs() > epsilon).float().mean()) for a in agents]
