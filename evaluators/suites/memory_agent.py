"""The MemAgent-style reader: read a long context chunk by chunk, rewrite a bounded memory, answer from it.

For each item: memory = "" ; for each chunk: memory = model(question, memory, chunk) cut to `memory_chars`
characters; then answer = model(question, memory). The context itself is never shown whole, so the
model's context window only has to hold one chunk plus the memory. Every step is one batched
`generate` call across all items that still have a chunk to read; the answers are one last call.

Request ids: `step_id(item_id, "memory<k>")` for the k-th memory update (k from 0), the bare item id for
the answer - so a replay file needs a line per memory step and one per answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from evaluators.backends.replay import step_id
from evaluators.protocol import GenerationSettings, Generator, Prompt, Request

__all__ = ["AgentTrace", "answer_prompt", "chunk_text", "run_memory_agent", "update_prompt"]


@dataclass
class AgentTrace:
    """What the agent did on one item: its memory after each chunk and its final answers (one per sample)."""

    item_id: str
    memories: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def chunk_text(text: str, chunk_size: int) -> list[str]:
    """Consecutive pieces of at most `chunk_size` characters that join back to `text`.

    A piece ends at a line break, else a sentence end, else a space in its second half when there is one,
    so facts are rarely cut in two.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunks, start = [], 0
    while start < len(text):
        end = start + chunk_size
        if end < len(text):
            window = text[start:end]
            for boundary in ("\n", ". ", " "):
                cut = window.rfind(boundary)
                if cut >= chunk_size // 2:
                    end = start + cut + len(boundary)
                    break
        chunks.append(text[start:end])
        start = end
    return chunks


def update_prompt(question: str, memory: str, chunk: str, memory_chars: int) -> str:
    return ("You are reading a long document one piece at a time in order to answer a question at the end. "
            "Between pieces you keep only a short memory.\n\n"
            f"Question: {question}\n\n"
            f"Your memory so far:\n{memory or '(empty)'}\n\n"
            f"Next piece of the document:\n{chunk}\n\n"
            "Write your updated memory: keep what may help answer the question, add any relevant fact from this "
            f"piece word for word, drop the rest. At most {memory_chars} characters. Reply with the memory only.")


def answer_prompt(question: str, memory: str) -> str:
    return ("You have read a long document one piece at a time and kept this memory of it.\n\n"
            f"Memory:\n{memory or '(empty)'}\n\n"
            f"Question: {question}\nAnswer with the answer only, in a few words.")


def run_memory_agent(generator: Generator, items: Sequence[Mapping[str, Any]], *, chunk_size: int, memory_chars: int,
                     memory_settings: GenerationSettings, answer_settings: GenerationSettings,
                     chat: bool = True) -> list[AgentTrace]:
    """Run the reader on every item (`context`, `question`), batching each step across items.

    Memory updates draw one sample each (one trajectory per item); the answer step draws `answer_settings.n`.
    """
    if memory_chars < 1:
        raise ValueError(f"memory_chars must be >= 1, got {memory_chars}")
    memory_settings = replace(memory_settings, n=1)
    chunks = [chunk_text(item["context"], chunk_size) for item in items]
    traces = [AgentTrace(str(item["id"])) for item in items]
    memories = [""] * len(items)
    for step in range(max((len(c) for c in chunks), default=0)):
        active = [i for i, c in enumerate(chunks) if step < len(c)]
        requests = [Request(step_id(traces[i].item_id, f"memory{step}"),
                            _as_prompt(update_prompt(items[i]["question"], memories[i], chunks[i][step], memory_chars), chat))
                    for i in active]
        outputs = generator.generate(requests, _step_seed(memory_settings, step))
        for i, samples in zip(active, outputs):
            memories[i] = samples[0].strip()[:memory_chars]  # the bound holds whatever the model writes
            traces[i].memories.append(memories[i])
    requests = [Request(t.item_id, _as_prompt(answer_prompt(item["question"], m), chat))
                for t, item, m in zip(traces, items, memories)]
    for trace, samples in zip(traces, generator.generate(requests, answer_settings) if requests else []):
        trace.answers = list(samples)
    return traces


def _as_prompt(text: str, chat: bool) -> Prompt:
    return [{"role": "user", "content": text}] if chat else text


def _step_seed(settings: GenerationSettings, step: int) -> GenerationSettings:
    """A different (still deterministic) seed per step, so sampled memory updates are not all drawn alike."""
    return replace(settings, seed=settings.seed + 1000 * (step + 1))
