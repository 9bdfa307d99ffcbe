"""The tiny RL-trained agent zoo: a small base model and three agents trained from it by GRPO.

`evomerge zoo build DIR` runs, from one seed: tokenizer -> supervised pretraining of the base on
the three toy families (correct and flawed demonstrations) -> one GRPO agent per family, rewarded
by the suites' own scorers -> held-out scores and task-vector statistics (DIR/zoo.json).
One idea per module: families (toy family <-> suite adapter), tokenizer, model, encoding,
pretrain, sampling, grpo, heldout, build.

This package sits beside the library, not inside it: it uses `evomerge` (checkpoints, the synthetic
tokenizer, the analysis) and the `evaluators` suites, and nothing in `evomerge` imports it except the
`evomerge zoo` command, lazily, when it runs.
"""
