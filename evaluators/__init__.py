"""Agent benchmark suites, generation backends and the code sandbox.

Independent of `evomerge`: the search uses it only through `evaluators.protocol`.
"""
