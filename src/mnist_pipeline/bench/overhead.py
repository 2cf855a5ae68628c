"""What the default config's augmentation and regularization cost per training epoch.

Variants of the pipeline's default config (``params.yaml``): ``default``; each augmentation or
regularizer it switches on (:data:`REGULARIZERS`), switched off alone; and ``all off``, the same net,
optimizer, schedule and batch size with none of them. The default switches on ``augment_shift`` and
``l2``, so the variants are default, augment_shift off, l2 off and all off.

The effect is small (a few percent) and the shared 2-core machines' speed drifts in phases of many
seconds by up to 2x, so the variants are interleaved epoch by epoch: a worker process (fresh, on the
kernels ``compute.kernels`` names: portable by default, native where portable kernels cannot apply)
builds one network per variant and runs rounds; a round trains every variant for one epoch (``fit``
with ``epochs=1``: each round restarts the schedule and the momentum, which costs nothing measurable
but makes the validation accuracy reported after the last round no measure of the default run's). The
first :data:`WARMUP_ROUNDS` (page faults, cold caches) are not counted; then :data:`CYCLES` cycles of
``2 * len(variants)`` rounds in the orders of :func:`round_order`, so each variant runs before each
other one exactly as often as after it. A variant's overhead is the median over counted rounds of its
epoch's seconds ÷ ``all off``'s epoch in the same round; its min–max is the spread. Timed are
``fit``'s per-epoch seconds: shuffle, gather, augmentation and every batch step, not the validation
pass. :data:`REPS` workers run one after the other; their rounds are pooled.

Worker: ``python -m mnist_pipeline.bench.overhead '{"params": ..., "plan": {...}, "rounds": 9, ...}'``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline import config
from mnist_pipeline.bench.compare import kernel_label, paired, rotation, run_module, spread
from mnist_pipeline.bench.worker import checked_fingerprint
from mnist_pipeline.config import Config
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.parallel import Workers
from mnist_pipeline.mlp.trainer import fit
from mnist_pipeline.splits import load_feature_split

log = logging.getLogger(__name__)

# 2 workers x (1 + 8) rounds x 4 variants x 1 epoch: about 60 s on the 2-core bench machine.
WARMUP_ROUNDS = 1  # not counted
CYCLES = 1  # of 2 * len(variants) counted rounds, per worker
REPS = 2
BASELINE = "all off"
# Every augmentation and regularizer the trainer has: its params.yaml section and its "off" value.
REGULARIZERS: dict[str, tuple[str, float]] = {
    "augment_shift": ("train", 0),
    "augment_elastic_alpha": ("train", 0.0),
    "augment_rotate": ("train", 0.0),
    "augment_scale": ("train", 0.0),
    "augment_shear": ("train", 0.0),
    "augment_translate": ("train", 0.0),
    "l2": ("train", 0.0),
    "label_smoothing": ("train", 0.0),
    "max_norm": ("train", 0.0),
    "dropout": ("model", 0.0),
}


# The deformations (elastic and affine, one resample per image) on the wide net, measured as their own
# table: the best preset as it is against the same with none.
DEFORMATIONS = ("augment_elastic_alpha", "augment_rotate", "augment_scale", "augment_shear", "augment_translate")
DEFORMED_WIDE = ("experiment=best",)
UNDEFORMED = "deformations off"


def deformation_plan(cfg: Config) -> dict[str, tuple[str, ...]]:
    """``cfg`` as it is against ``cfg`` without its deformations (:data:`UNDEFORMED`, the baseline)."""
    on = [name for name in switched_on(cfg) if name in DEFORMATIONS]
    if not on:
        raise ValueError("the config deforms no image: no deformation cost to measure")
    return {"deformed": (), UNDEFORMED: tuple(on)}


def switched_on(cfg: Config) -> dict[str, float]:
    """The augmentations and regularizers ``cfg`` switches on, with their values, in :data:`REGULARIZERS` order."""
    values = {name: getattr(getattr(cfg, section), name) for name, (section, _) in REGULARIZERS.items()}
    return {name: value for name, value in values.items() if value != REGULARIZERS[name][1]}


def variants(on: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each variant's name and what it switches off: default, each of ``on`` alone (if several), all off."""
    if not on:
        raise ValueError("the default config switches no augmentation or regularizer on: no overhead to measure")
    alone = {f"{name} off": (name,) for name in on} if len(on) > 1 else {}
    return {"default": (), **alone, BASELINE: tuple(on)}


def switch_off(cfg: Config, names: Sequence[str], epochs: int) -> Config:
    """``cfg`` with the regularizers ``names`` off and ``epochs`` training epochs."""
    fields: dict[str, dict[str, Any]] = {"train": {"epochs": epochs}}
    for name in names:
        section, off = REGULARIZERS[name]
        fields.setdefault(section, {})[name] = off
    return replace(cfg, **{section: replace(getattr(cfg, section), **f) for section, f in fields.items()})


def round_order(j: int, names: Sequence[str]) -> list[str]:
    """The order of counted round ``j``: every rotation of ``names``, then every rotation reversed, and again.

    Over each ``2 * len(names)`` rounds each name comes before each other one exactly as often as after
    it, so a drift of the machine's speed within a round favours no variant over another.
    """
    order = rotation(j, names)
    return order[::-1] if (j // len(names)) % 2 else order


def run_variants(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside the worker: ``spec["rounds"]`` rounds of one epoch per variant of ``spec["plan"]``.

    Returns each variant's per-round epoch seconds, its validation accuracy after the last round,
    and the compute fingerprint.
    """
    cfg = config.load(spec["params"])
    plan: dict[str, list[str]] = spec["plan"]
    d, c = cfg.dataset.num_features, cfg.dataset.num_classes
    train, val = (load_feature_split(Path(spec["features"]) / f"{name}.npz", d, c) for name in ("train", "val"))
    runs = {}
    chunks, workers = cfg.compute.chunks, Workers(min(cfg.compute.chunks, int(spec["threads"])))
    for name, off in plan.items():  # each variant trains its own network from the default's seed
        variant = switch_off(cfg, off, 1)
        rng = np.random.default_rng(variant.train.seed)
        m = variant.model
        runs[name] = (
            variant,
            Network(variant.layer_sizes, m.activation, m.init, rng, variant.train.dtype, m.dropout, chunks, workers),
            rng,
        )
    seconds: dict[str, list[float]] = {name: [] for name in plan}
    val_acc: dict[str, float] = {}
    with threadpool_limits(limits=1):  # one BLAS thread per call, the chunks on the workers: as the train stage
        fingerprint = checked_fingerprint(spec["kernels"] == "portable", "overhead worker")
        for r in range(int(spec["rounds"])):
            for name in round_order(r - WARMUP_ROUNDS, list(plan)) if r >= WARMUP_ROUNDS else plan:
                v, net, rng = runs[name]
                rows, epoch = fit(net, train, val, v.train, v.optimizer, v.schedule, rng, v.dataset.image_shape)
                seconds[name] += epoch
                val_acc[name] = rows[-1]["val_acc"]
    return {"epoch_seconds": seconds, "val_acc": val_acc, "compute": fingerprint}


def run_worker(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One worker's rounds in a fresh ``python -m mnist_pipeline.bench.overhead`` process; its JSON result."""
    return run_module("mnist_pipeline.bench.overhead", spec, env, "overhead worker")


def summarize(
    plan: Mapping[str, Sequence[str]], workers: Sequence[dict[str, Any]], baseline: str = BASELINE
) -> dict[str, Any]:
    """Per variant: s/epoch spread and its ratio to ``baseline`` round by round (median, min–max), val acc.

    The first :data:`WARMUP_ROUNDS` rounds of each worker are left out.
    """
    counted = {name: [s for w in workers for s in w["epoch_seconds"][name][WARMUP_ROUNDS:]] for name in plan}
    out = {}
    for name, off in plan.items():
        pairs = paired(counted[name], counted[baseline])
        out[name] = {
            "off": list(off),
            "on": [k for k in plan[baseline] if k not in off],  # what its ratio to the baseline costs
            "seconds_per_epoch": spread(counted[name]),
            "over_all_off": pairs["median"],
            "over_all_off_paired": pairs,
            "val_acc": spread([w["val_acc"][name] for w in workers]),
            "kernels": sorted({kernel_label(w["compute"]) for w in workers}),  # one label unless workers differ
        }
    return out


def measure(
    params_path: Path,
    features: Path,
    threads: int,
    envs: Mapping[str, dict[str, str]],
    cycles: int = CYCLES,
    reps: int = REPS,
    deformation: bool = False,
) -> dict[str, Any]:
    """Run ``reps`` workers, each of the warm-up and ``cycles`` cycles of rounds, over the variants of
    ``params_path``'s config: :func:`variants` of what it switches on, or with ``deformation`` its
    :func:`deformation_plan` (against :data:`UNDEFORMED`).

    ``envs`` maps ``compute.kernels`` modes to process environments (``portable`` only where it applies).
    """
    if cycles < 1:
        raise ValueError(f"cycles must be at least 1, got {cycles}")
    cfg = config.load(params_path)
    kernels = cfg.compute.kernels if cfg.compute.kernels in envs else "native"
    on = switched_on(cfg)
    plan, baseline = (deformation_plan(cfg), UNDEFORMED) if deformation else (variants(list(on)), BASELINE)
    rounds = WARMUP_ROUNDS + cycles * 2 * len(plan)
    spec = {"params": str(params_path), "features": str(features), "threads": threads, "kernels": kernels}
    spec.update(plan={name: list(off) for name, off in plan.items()}, rounds=rounds)
    workers = []
    for rep in range(reps):
        workers.append(run_worker(spec, envs[kernels]))
        for name in plan:
            times = workers[-1]["epoch_seconds"][name]
            log.info("overhead worker %d/%d %-20s %s s/epoch", rep + 1, reps, name, " ".join(f"{t:.3f}" for t in times))
    return {
        "label": "-".join(map(str, cfg.layer_sizes)) + f" {cfg.model.activation} b{cfg.train.batch_size}",
        "rounds": rounds,
        "warmup_rounds": WARMUP_ROUNDS,
        "cycles": cycles,
        "reps": reps,
        "threads": threads,
        "kernels_asked": cfg.compute.kernels,
        "kernels": kernels,
        "default_on": on,
        "baseline": baseline,
        "variants": summarize(plan, workers, baseline),
        "workers": workers,
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnist_pipeline.bench.overhead '<json spec>'")
    print(json.dumps(run_variants(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
