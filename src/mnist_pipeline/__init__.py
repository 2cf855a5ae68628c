"""mnist-pipeline: a reproducible DVC + Hydra pipeline around a pure-NumPy MLP."""
