"""Kept for one release: the tiny generated checkpoints moved to `evomerge.tiny_checkpoints`; import them from there."""

from evomerge.tiny_checkpoints import (  # noqa: F401
    CHATML_TEMPLATE, SPECIAL_TOKENS, TinyShape, build_tiny_family, build_tokenizer, default_corpus, tiny_config,
)
