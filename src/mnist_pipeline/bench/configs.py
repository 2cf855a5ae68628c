"""The benchmarked networks: one frozen record each, shared by our trainer, PyTorch and the floor.

Both trainers use classical momentum SGD with a constant learning rate and L2 on weight matrices only:
ours ``g += l2 W; v = mu v - lr g; W += v``, PyTorch ``SGD(momentum=mu, weight_decay=l2)`` on the
weights (no decay on biases), ``d = g + l2 W; buf = mu buf + d; W -= lr buf``. With a constant ``lr``
these are the same iteration (``v = -lr buf``). The classic net's tutorial recipe is EMA momentum with
lr 4 (``v = 0.9 v + 0.1 g; W -= 4 v``), which is classical momentum with lr ``4 * 0.1 = 0.4``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    """One benchmarked net and its training recipe; ``reps`` interleaved repetitions per implementation."""

    name: str
    sizes: tuple[int, ...]
    activation: str
    init: str
    batch_size: int
    epochs: int
    lr: float
    momentum: float = 0.9
    l2: float = 0.0
    seed: int = 0
    reps: int = 3

    @property
    def label(self) -> str:
        return "-".join(map(str, self.sizes)) + f" {self.activation} b{self.batch_size}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        return cls(**{**data, "sizes": tuple(data["sizes"])})


CONFIGS: tuple[BenchConfig, ...] = (
    # Headline: the pipeline's default net (conf/model/mlp_256_128.yaml), constant lr instead of cosine.
    BenchConfig("headline", (784, 256, 128, 10), "relu", "he_normal", 128, 5, 0.1, l2=1e-4, reps=5),
    # The classic tutorial net (conf/experiment/tutorial_64_sigmoid.yaml): 9 epochs.
    BenchConfig("classic", (784, 64, 10), "sigmoid", "lecun_normal", 128, 9, 0.4, reps=5),
    # A wide net: GEMM-bound, where BLAS quality dominates.
    BenchConfig("wide", (784, 1024, 1024, 10), "relu", "he_normal", 128, 2, 0.05, l2=1e-4, reps=5),
)


def select(names: list[str] | None, quick: bool = False) -> list[BenchConfig]:
    """The configs named (all by default); ``quick`` cuts each to 1 epoch and 1 repetition."""
    known = {c.name: c for c in CONFIGS}
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ValueError(f"unknown config(s) {unknown}; valid: {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(CONFIGS)
    return [replace(c, epochs=1, reps=1) for c in chosen] if quick else chosen
