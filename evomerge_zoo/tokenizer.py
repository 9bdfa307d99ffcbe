"""The zoo's tokenizer: byte-level BPE with a ChatML template, trained on committed text.

The corpus is the shared generic corpus plus `evomerge_zoo/zoo_corpus.txt` (rendered examples
of the three toy families), both committed, so the same vocabulary comes out on every machine.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

from evomerge.synthetic import build_tokenizer, default_corpus

VOCAB_SIZE = 2048


def zoo_corpus() -> str:
    return resources.files("evomerge_zoo").joinpath("zoo_corpus.txt").read_text(encoding="utf-8")


def build_zoo_tokenizer(vocab_size: int = VOCAB_SIZE):
    return build_tokenizer(default_corpus() + "\n" + zoo_corpus(), vocab_size=vocab_size)


def render_zoo_corpus(per_family: int = 60, seed: int = 12345, flaw_rate: float = 0.5) -> str:
    """Chat transcripts of toy tasks (suite prompts + correct or flawed replies), one block per task.

    Writes `evomerge_zoo/zoo_corpus.txt` when the suites' prompt wording changes
    (`python -m evomerge_zoo.tokenizer`); the committed file is what the build trains on.
    """
    import tempfile

    from evaluators.toy.splits import training_tasks

    from evomerge_zoo.families import FAMILIES, load_through_suite

    renderer = build_tokenizer(default_corpus(), vocab_size=300)  # only its chat template is used
    rng = random.Random(seed)
    blocks: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, family in FAMILIES.items():
            stream = training_tasks(family.sample, seed, exclude=())
            tasks = [next(stream) for _ in range(per_family)]
            suite, items = load_through_suite(name, tasks, Path(tmp) / f"{name}.jsonl")
            for task, item in zip(tasks, items):
                messages = list(suite.request(item).prompt)
                reply = family.reply(task, rng.random() < flaw_rate)
                blocks.append(renderer.apply_chat_template(messages + [{"role": "assistant", "content": reply}],
                                                           tokenize=False))
    rng.shuffle(blocks)
    return "".join(blocks) + lexicon_lines()


def lexicon_lines(repeats: int = 12) -> str:
    """Each word the families use, at a line start and after a space, often enough for BPE to keep it whole."""
    from evaluators.toy import coding, memory, tool_use

    words = list(dict.fromkeys(str(w) for w in coding.LEXICON + memory.LEXICON + tool_use.LEXICON))
    return "".join(f"{w} {w} {w}\n" * repeats for w in words)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "zoo_corpus.txt"
    target.write_text(render_zoo_corpus(), encoding="utf-8")
    print(f"wrote {target}")
