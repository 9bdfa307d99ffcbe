"""evomerge: merge RL-trained LLM agents and search for the best merge.

Kept light on purpose: importing evomerge does not import transformers, vLLM or Ray.
"""

__version__ = "0.1.0"
