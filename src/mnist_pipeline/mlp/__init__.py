"""A from-scratch NumPy multilayer perceptron: layers, losses, optimizers, schedules, trainer.

Rows are examples: ``Z = X @ W + b`` with ``X: (B, in)``, ``W: (in, out)``.
Every layer has ``forward``/``backward`` and ``params``/``grads`` dicts that
optimizers update in place. The package imports only numpy and the standard
library; it owns its config types (``TrainConfig``, ``OptimizerConfig``,
``ScheduleConfig``, beside their users) and its error, ``MLPError``.
"""
