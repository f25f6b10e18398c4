"""Hyperparameter evolution (--evolve): mutation of the best previous hyps, evolve.csv bookkeeping."""

from copy import deepcopy
from pathlib import Path

import numpy as np
import yaml

from utils.general import LOGGER, colorstr
from utils.metrics import fitness

# hyp: (mutation scale 0-1, lower limit, upper limit)
META = {
    "lr0": (1, 1e-5, 1e-1),
    "lrf": (1, 0.01, 1.0),
    "momentum": (0.3, 0.6, 0.98),
    "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0),
    "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2),
    "cls": (1, 0.2, 4.0),
    "cls_pw": (1, 0.5, 2.0),
    "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0),
    "iou_t": (0, 0.1, 0.7),
    "anchor_t": (1, 2.0, 8.0),
    "anchors": (2, 2.0, 10.0),
    "fl_gamma": (0, 0.0, 2.0),
    "hsv_h": (1, 0.0, 0.1),
    "hsv_s": (1, 0.0, 0.9),
    "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9),
    "scale": (1, 0.0, 0.9),
    "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001),
    "flipud": (1, 0.0, 1.0),
    "fliplr": (0, 0.0, 1.0),
    "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0),
    "copy_paste": (1, 0.0, 1.0),
}
N_METRICS = 7  # P, R, mAP@.5, mAP@.5:.95, val box, obj, cls


def mutate(hyp, evolve_csv, rng, parents=5, mp=0.8, s=0.2):
    """New hyps from the best previous generations (weighted pick), multiplicative gaussian noise, clipped to META."""
    keys = [k for k in META if k in hyp]
    x = np.loadtxt(evolve_csv, ndmin=2, delimiter=",", skiprows=1)
    n = min(parents, len(x))
    x = x[np.argsort(-fitness(x))][:n]
    w = fitness(x) - fitness(x).min() + 1e-6
    parent = x[rng.choice(n, p=w / w.sum())] if n > 1 else x[0]
    g = np.array([META[k][0] for k in keys])
    v = np.ones(len(keys))
    while all(v == 1):
        v = (g * (rng.random(len(keys)) < mp) * rng.standard_normal(len(keys)) * rng.random() * s + 1).clip(0.3, 3.0)
    new = dict(hyp)
    for i, k in enumerate(keys):
        new[k] = float(parent[i + N_METRICS] * v[i])
    return constrain(new)


def constrain(hyp):
    """Clip every evolvable hyp into its limits, 5 significant digits."""
    for k, (_, lo, hi) in META.items():
        if k in hyp:
            hyp[k] = round(min(max(hyp[k], lo), hi), 5)
    return hyp


def record_generation(results, hyp, save_dir):
    """Append one generation to evolve.csv and write the best hyps so far to hyp_evolve.yaml."""
    evolve_csv, evolve_yaml = Path(save_dir) / "evolve.csv", Path(save_dir) / "hyp_evolve.yaml"
    keys = [k for k in META if k in hyp]
    header = [
        "metrics/precision",
        "metrics/recall",
        "metrics/mAP_0.5",
        "metrics/mAP_0.5:0.95",
        "val/box_loss",
        "val/obj_loss",
        "val/cls_loss",
        *keys,
    ]
    row = [*results[:N_METRICS], *(hyp[k] for k in keys)]
    new = not evolve_csv.exists()
    with open(evolve_csv, "a") as f:
        if new:
            f.write(",".join(header) + "\n")
        f.write(",".join(f"{v:.5g}" for v in row) + "\n")
    x = np.loadtxt(evolve_csv, ndmin=2, delimiter=",", skiprows=1)
    best = x[np.argmax(fitness(x))]
    with open(evolve_yaml, "w") as f:
        f.write(
            f"# Hyperparameter Evolution Results\n# Generations: {len(x)}\n"
            f"# Best fitness: {fitness(best[None])[0]:.5g}\n"
        )
        yaml.safe_dump({k: float(v) for k, v in zip(keys, best[N_METRICS:])}, f, sort_keys=False)
    LOGGER.info(
        f"{colorstr('evolve: ')}{len(x)} generations, best fitness {fitness(best[None])[0]:.5g}, saved to {evolve_yaml}"
    )
    return evolve_csv


def evolve(opt, train):
    """--evolve N: N generations of mutated hyps, each trained once by train(hyp) -> results; evolve.csv and
    hyp_evolve.yaml kept."""
    from utils.plots import plot_evolve

    with open(opt.hyp, errors="ignore") as f:
        hyp = constrain(yaml.safe_load(f))
    opt.noval, opt.nosave = True, True
    save_dir, rng = Path(opt.save_dir), np.random.default_rng(opt.seed)
    evolve_csv = save_dir / "evolve.csv"
    save_dir.mkdir(parents=True, exist_ok=True)
    for gen in range(opt.evolve):
        trial = mutate(hyp, evolve_csv, rng) if evolve_csv.exists() else dict(hyp)
        LOGGER.info(f"{colorstr('evolve: ')}generation {gen + 1}/{opt.evolve}")
        results = train(deepcopy(trial))
        record_generation(results, trial, save_dir)
    plot_evolve(evolve_csv)
    LOGGER.info(
        f"Hyperparameter evolution finished {opt.evolve} generations\n"
        f"Results saved to {colorstr('bold', save_dir)}\n"
        f"Usage example: $ python train.py --hyp {save_dir / 'hyp_evolve.yaml'}"
    )
