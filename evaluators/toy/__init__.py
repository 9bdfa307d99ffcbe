"""Toy task families for the tiny agent zoo: seeded generators of coding, tool-use and memory items.

Each family writes items in the format its real suite loads (HumanEval JSONL, BFCL JSONL with
inline answers, QA JSONL), so the same scorers grade the toy data and the real benchmarks. A
generated `ToyTask` also carries the correct completion and a *flawed* one (the family's typical
mistake), which the zoo mixes into the base model's pretraining so the base succeeds only part
of the time and reinforcement learning has something to fix.
"""
