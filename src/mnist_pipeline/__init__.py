"""mnist-pipeline: a reproducible DVC + Hydra pipeline around a pure-NumPy MLP."""

__version__ = "0.1.0"
