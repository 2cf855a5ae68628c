"""The PyTorch CPU run: the only module that imports ``torch`` (installed by the ``bench`` extra only).

It starts from our network's exact initial weights (copied in, ``W.T`` as ``nn.Linear.weight``) and
draws the same per-epoch permutations from the same numpy generator, so both trainers see the same
numbers in the same order. The loop is idiomatic eager PyTorch doing the same per-batch work as ours:
forward, mean cross-entropy, backward, SGD step, plus the running loss and accuracy ``fit`` keeps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.runs import digest, epoch_orders, initial_network
from mnist_pipeline.mlp.trainer import Split


def torch_info() -> dict[str, Any]:
    """Version, BLAS and thread count of the loaded torch."""
    import torch

    config = torch.__config__.show()
    blas = next((part.split("=", 1)[1] for part in config.replace(",", "\n").split() if "BLAS_INFO=" in part), "?")
    return {"version": torch.__version__, "blas": blas, "threads": torch.get_num_threads()}


def run_torch(cfg: BenchConfig, splits: dict[str, Split], threads: int) -> dict[str, Any]:
    """Train the same net with ``torch.optim.SGD``; per-epoch seconds (shuffle, gather, steps), test accuracy."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.set_num_threads(threads)
    net, rng = initial_network(cfg)
    train, n = splits["train"], len(splits["train"].y)
    init_sha = digest(p for _, p, _ in net.parameters())
    order_sha = digest(epoch_orders(rng, n, cfg.epochs))
    activation = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[cfg.activation]
    layers: list[torch.nn.Module] = []
    for k, dense in enumerate(net.dense):
        linear = torch.nn.Linear(*dense.params["W"].shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(dense.params["W"].T))  # (out, in)
            linear.bias.copy_(torch.from_numpy(dense.params["b"]))
        layers += [linear] if k == len(net.dense) - 1 else [linear, activation()]
    model = torch.nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    groups = [
        {"params": [m.weight for m in linears], "weight_decay": cfg.l2},
        {"params": [m.bias for m in linears], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y.astype(np.int64))
    seconds = []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n))  # the permutation fit draws for this epoch
        xs, ys = x.index_select(0, perm), y.index_select(0, perm)  # gathered once, contiguous
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            xb, yb = xs[i : i + cfg.batch_size], ys[i : i + cfg.batch_size]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(xb)
            correct += int((logits.argmax(dim=1) == yb).sum())
        seconds.append(time.perf_counter() - start)
    model.eval()
    test = splits["test"]
    with torch.inference_mode():
        pred = model(torch.from_numpy(test.x)).argmax(dim=1).numpy()
    return {
        "epoch_seconds": seconds,
        "test_acc": float((pred == test.y).mean()),
        "final_train_loss": loss_sum / n,
        "param_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}),
        "init_sha256": init_sha,
        "order_sha256": order_sha,
        "torch": torch_info(),
    }
