"""What the default config's augmentation and regularization cost per training epoch.

Variants of the pipeline's default config (``params.yaml``): ``default``; each augmentation or
regularizer it switches on (:data:`REGULARIZERS`), switched off alone; and ``all off``, the same net,
optimizer, schedule and batch size with none of them. The default switches on ``augment_shift`` and
``l2``, so the variants are default, augment_shift off, l2 off and all off. Repetition ``r`` runs them
in an order rotated by ``r`` (:func:`~mnist_pipeline.bench.compare.rotation`), each in a fresh worker
process on the kernels ``compute.kernels`` names (portable by default; native where portable kernels
cannot apply, and the result says which). Timed are ``fit``'s per-epoch seconds: shuffle, gather,
augmentation and every batch step, not the validation pass. Reported: the median over repetitions of
each run's mean s/epoch with min–max, and each variant's ratio to ``all off`` (ratio of the medians;
the per-repetition ratios as spread). A variant's ratio is the cost of what it leaves on.

Worker: ``python -m mnist_pipeline.bench.overhead '{"params": ..., "off": [...], "epochs": 3, ...}'``.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline import compute, config
from mnist_pipeline.bench.compare import WORKER_TIMEOUT, kernel_label, paired, rotation, spread
from mnist_pipeline.bench.worker import portable_gap
from mnist_pipeline.config import Config
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.trainer import fit
from mnist_pipeline.splits import load_feature_split

log = logging.getLogger(__name__)

# 3 epochs x 5 repetitions x 4 variants: about 100 s on the 2-core bench machine, inside make bench's 10 minutes.
EPOCHS = 3
REPS = 5
BASELINE = "all off"
# Every augmentation and regularizer the trainer has: its params.yaml section and its "off" value.
REGULARIZERS: dict[str, tuple[str, float]] = {
    "augment_shift": ("train", 0),
    "augment_elastic_alpha": ("train", 0.0),
    "l2": ("train", 0.0),
    "label_smoothing": ("train", 0.0),
    "max_norm": ("train", 0.0),
    "dropout": ("model", 0.0),
}


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


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside the worker: train ``spec["off"]``'s variant for ``spec["epochs"]``; fit's seconds, last val acc."""
    cfg = switch_off(config.load(spec["params"]), spec["off"], int(spec["epochs"]))
    d, c = cfg.dataset.num_features, cfg.dataset.num_classes
    train, val = (load_feature_split(Path(spec["features"]) / f"{name}.npz", d, c) for name in ("train", "val"))
    rng = np.random.default_rng(cfg.train.seed)
    net = Network(
        cfg.layer_sizes, cfg.model.activation, cfg.model.init, rng, np.dtype(cfg.train.dtype), cfg.model.dropout
    )
    with threadpool_limits(limits=int(spec["threads"])):
        fingerprint = compute.fingerprint()
        gap = portable_gap(fingerprint) if spec["kernels"] == "portable" else ""
        if gap:  # native timings must not be reported as the portable default's
            raise RuntimeError(f"the overhead worker is not on portable kernels: {gap}")
        rows, seconds = fit(net, train, val, cfg.train, cfg.optimizer, cfg.schedule, rng, cfg.dataset.image_shape)
    return {"epoch_seconds": seconds, "val_acc": rows[-1]["val_acc"], "compute": fingerprint}


def run_worker(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One variant's run in a fresh ``python -m mnist_pipeline.bench.overhead`` process; its JSON result."""
    cmd = [sys.executable, "-m", "mnist_pipeline.bench.overhead", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"overhead worker (off: {spec['off']}) failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(plan: Mapping[str, Sequence[str]], runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: s/epoch spread, ratio to :data:`BASELINE` (of medians, and paired per repetition), val acc."""
    per_epoch = {name: [statistics.fmean(r["epoch_seconds"]) for r in runs[name]] for name in plan}
    baseline = spread(per_epoch[BASELINE])["median"]
    out = {}
    for name, off in plan.items():
        s = spread(per_epoch[name])
        out[name] = {
            "off": list(off),
            "on": [k for k in plan[BASELINE] if k not in off],  # what its ratio to all off costs
            "seconds_per_epoch": s,
            "over_all_off": s["median"] / baseline,
            "over_all_off_paired": paired(per_epoch[name], per_epoch[BASELINE]),
            "val_acc": spread([r["val_acc"] for r in runs[name]]),
            "kernels": sorted({kernel_label(r["compute"]) for r in runs[name]}),  # one label unless runs differ
            "runs": runs[name],
        }
    return out


def measure(
    params_path: Path,
    features: Path,
    threads: int,
    envs: Mapping[str, dict[str, str]],
    epochs: int = EPOCHS,
    reps: int = REPS,
) -> dict[str, Any]:
    """Run ``reps`` interleaved repetitions of every variant of ``params_path``'s config; summarize them.

    ``envs`` maps ``compute.kernels`` modes to process environments (``portable`` only where it applies).
    """
    cfg = config.load(params_path)
    kernels = cfg.compute.kernels if cfg.compute.kernels in envs else "native"
    on = switched_on(cfg)
    plan = variants(list(on))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    base_spec = {"params": str(params_path), "epochs": epochs, "features": str(features), "threads": threads}
    for rep in range(reps):
        for name in rotation(rep, list(plan)):
            result = run_worker({**base_spec, "off": list(plan[name]), "kernels": kernels}, envs[kernels])
            runs[name].append(result)
            mean = statistics.fmean(result["epoch_seconds"])
            log.info("overhead rep %d/%d %-20s %.3f s/epoch", rep + 1, reps, name, mean)
    return {
        "label": "-".join(map(str, cfg.layer_sizes)) + f" {cfg.model.activation} b{cfg.train.batch_size}",
        "epochs": epochs,
        "reps": reps,
        "threads": threads,
        "kernels_asked": cfg.compute.kernels,
        "kernels": kernels,
        "default_on": on,
        "variants": summarize(plan, runs),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnist_pipeline.bench.overhead '<json spec>'")
    print(json.dumps(run_variant(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
