"""Merge methods: one file per family, pure functions over tensors; `registry.METHODS` lists them."""
