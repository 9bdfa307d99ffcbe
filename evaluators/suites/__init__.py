"""Benchmark suites: one file per suite; `evaluators.registry` lists them."""
