"""A from-scratch NumPy multilayer perceptron: layers, losses, optimizers, schedules.

Rows are examples: ``Z = X @ W + b`` with ``X: (B, in)``, ``W: (in, out)``.
Every layer has ``forward``/``backward`` and ``params``/``grads`` dicts that
optimizers update in place.
"""
