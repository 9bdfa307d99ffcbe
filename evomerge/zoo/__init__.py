"""The tiny RL-trained agent zoo: a small base model and three agents trained from it by GRPO.

`evomerge zoo build DIR` runs, from one seed: tokenizer -> supervised pretraining of the base on
the three toy families (correct and flawed demonstrations) -> one GRPO agent per family, rewarded
by the suites' own scorers -> held-out scores and task-vector statistics (DIR/zoo.json).
One idea per module: families (toy family <-> suite adapter), tokenizer, model, encoding,
pretrain, sampling, grpo, heldout, build.
"""
