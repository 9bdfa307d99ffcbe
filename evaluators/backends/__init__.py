"""Generation backends: transformers (hf), vLLM, and replay of saved completions."""
