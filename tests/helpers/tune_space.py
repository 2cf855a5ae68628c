"""A small search space for the tune tests: 1-epoch trials of fast models, a conditional key, each param type."""

TINY_SPACE = {
    "trials": 4,
    "seed": 3,
    "fixed": {"train.epochs": 1},
    "params": {
        "train.lr": {"type": "float", "low": 0.02, "high": 0.4, "log": True},
        "model": {"type": "categorical", "choices": ["mlp_64_sigmoid", "softmax_regression"]},
        "optimizer": {"type": "categorical", "choices": ["momentum", "sgd"]},
        "optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": ["momentum"]}},
        "train.batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
    },
}
