"""Which files of an input checkpoint evomerge may read or copy: one check for every reader of them.

A checkpoint directory's files must be inside it. Links are followed only where they stay inside the
directory, or where the directory is a Hugging Face cache snapshot (`.../models--org--name/snapshots/<commit>`)
and the link goes into that same repo's `blobs/` folder, which is how the Hub cache stores every file. Any
other link (a tokenizer file pointing at ~/.ssh/id_rsa, a shard pointing at another model) is refused,
naming the file and its target, before anything is read or written: a merge copies side files into its
output, so a foreign file would otherwise leave the machine inside a shared checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from evomerge.errors import CheckpointError
from evomerge.io.hub import blobs_folder

# Files copied verbatim from the reference input into a merged checkpoint (tokenizer, chat template, generation).
SIDE_FILE_PATTERNS = (
    "tokenizer*", "vocab.*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "chat_template*", "generation_config.json", "*.tiktoken", "spiece.model",
)


def check_input_file(root: Path, file: Path) -> Path:
    """`file`, a file of the checkpoint directory `root`, once its links are checked (see the module doc);
    raises CheckpointError naming the file and where it leads when it leaves the checkpoint."""
    real_root = root.expanduser().resolve()
    real = file.expanduser().resolve()
    if real.is_relative_to(real_root):
        return file
    blobs = blobs_folder(real_root)
    if blobs is not None and real.is_relative_to(blobs):
        return file
    also = f" or its Hugging Face cache blobs folder {blobs}" if blobs is not None else ""
    raise CheckpointError(
        f"{file}: links to {real}, outside the checkpoint directory {real_root}{also}; refusing it (links are "
        "followed only within a checkpoint or, in the Hugging Face cache, into the repo's own blobs/ folder)"
    )


def side_files(root: Path) -> list[Path]:
    """The tokenizer, chat template and generation files of a checkpoint directory, each checked."""
    found = []
    for pattern in SIDE_FILE_PATTERNS:
        for f in sorted(root.glob(pattern)):
            if f.is_file() and f not in found:
                found.append(check_input_file(root, f))
    return found
