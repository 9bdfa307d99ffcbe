"""Search machinery: optimizers behind one ask/tell interface, Pareto fronts, multi-fidelity promotion.

Nothing here imports torch, optuna or cma at package import; each optimizer module imports its
backend itself.
"""
