"""AutoAnchor: anchor order checks, best-possible-recall analysis and k-means/genetic anchor evolution."""

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from utils.general import LOGGER, colorstr


def check_anchor_order(m):
    """Flip Detect anchors when their area order disagrees with the stride order (small anchors for P3)."""
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], m.stride[-1] - m.stride[0]
    if da and torch.sign(da) != torch.sign(ds):
        LOGGER.info("AutoAnchor: reversing anchor order")
        m.anchors[:] = m.anchors.flip(0)


PREFIX = colorstr("autoanchor: ")


def _detect_layer(model):
    """The Detect head of a plain or DDP/DataParallel-wrapped Model."""
    return model.module.model[-1] if hasattr(model, "module") else model.model[-1]


def _dataset_from_yaml(path):
    """Build the rect LoadImagesAndLabels training dataset named by a dataset yaml (only shapes/labels are used)."""
    from utils.datasets import LoadImagesAndLabels
    from utils.downloads import check_dataset

    return LoadImagesAndLabels(check_dataset(path)["train"], rect=True)


def label_wh(dataset, img_size=640):
    """Label box sizes (N, 2) in pixels with images resized to img_size (long side), jittered by a seeded x0.9-1.1."""
    if not (hasattr(dataset, "shapes") and hasattr(dataset, "labels")):
        raise TypeError(f"autoanchor: dataset {type(dataset).__name__} needs .shapes (n, 2) and .labels attributes")
    shapes = np.asarray(dataset.shapes, dtype=np.float64).reshape(-1, 2)
    if len(shapes) != len(dataset.labels):
        raise ValueError(f"autoanchor: dataset has {len(shapes)} shapes but {len(dataset.labels)} label arrays")
    shapes = img_size * shapes / shapes.max(1, keepdims=True)
    scale = np.random.default_rng(0).uniform(0.9, 1.1, size=(len(shapes), 1))
    wh = [np.asarray(lb, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for s, lb in zip(shapes * scale, dataset.labels)]
    return np.concatenate(wh, 0).astype(np.float32) if wh else np.zeros((0, 2), dtype=np.float32)


def anchor_ratios(k, wh):
    """Ratio metric (N, n_anchors): the worse of the w and h ratios min(r, 1/r) of each box to each anchor."""
    r = wh[:, None] / k[None]
    return np.minimum(r, 1 / r).min(2)


def _fit_from_ratios(x, thr):
    """(best possible recall, mean anchors above threshold per target) from an anchor_ratios matrix."""
    return float((x.max(1) > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def anchor_fit(k, wh, thr=4.0):
    """(best possible recall, mean anchors above threshold per target) of anchors k (n, 2) on box sizes wh."""
    return _fit_from_ratios(anchor_ratios(np.asarray(k, dtype=np.float32).reshape(-1, 2), wh), thr)


def check_anchors(dataset, model, thr=4.0, imgsz=640):
    """Log how well the model's anchors fit the dataset; evolve and install new ones when BPR < 0.98."""
    m = _detect_layer(model)
    wh = label_wh(dataset, imgsz)
    if not len(wh):
        LOGGER.warning(f"{PREFIX}WARNING: dataset has no labels, anchors not checked")
        return
    stride = m.stride.to(m.anchors.device).view(-1, 1, 1)
    anchors = (m.anchors.detach() * stride).view(-1, 2).cpu().numpy()
    bpr, aat = anchor_fit(anchors, wh, thr)
    s = f"\n{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr >= 0.98:
        LOGGER.info(f"{s}Current anchors are a good fit to dataset")
        return
    LOGGER.info(f"{s}Anchors are a poor fit to dataset, attempting to improve...")
    new = kmean_anchors(dataset, n=m.anchors.numel() // 2, img_size=imgsz, thr=thr, gen=1000, verbose=False)
    new_bpr = anchor_fit(new, wh, thr)[0]
    if new_bpr > bpr:
        m.anchors[:] = torch.tensor(new, device=m.anchors.device).type_as(m.anchors).view_as(m.anchors)
        check_anchor_order(m)  # on pixel sizes: flipping grid-unit anchors would rescale them by the stride ratios
        m.anchors /= stride  # to grid units
        m.grid = [torch.zeros(1)] * m.nl  # drop decode grids cached with the old anchors
        m.anchor_grid = [torch.zeros(1)] * m.nl
        LOGGER.info(
            f"{PREFIX}New anchors (BPR {new_bpr:.4f}) saved to model. "
            "Update model *.yaml to use these anchors in the future."
        )
    else:
        LOGGER.info(f"{PREFIX}Original anchors better than new anchors (BPR {new_bpr:.4f}). Proceeding with original.")


def _anchor_summary(k, wh, thr, img_size):
    """A report of anchors k: threshold, BPR, anchors/target, mean ratio metrics and the anchor list."""
    x = anchor_ratios(k, wh)
    best = x.max(1)
    bpr, aat = _fit_from_ratios(x, thr)
    anchors = ", ".join(f"{round(w)},{round(h)}" for w, h in k)
    return (
        f"{PREFIX}thr={1 / thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr\n"
        f"{PREFIX}n={len(k)}, img_size={img_size}, metric_all={x.mean():.3f}/{best.mean():.3f}-mean/best, "
        f"past_thr={x[x > 1 / thr].mean() if (x > 1 / thr).any() else 0:.3f}-mean: {anchors}"
    )


def _initial_anchors(wh, n, rng):
    """Starting anchors: k-means of the whitened box sizes, or random sizes within their range if too few boxes."""
    s = wh.std(0)
    s[s == 0] = 1  # all boxes share a side length: nothing to whiten
    if len(wh) >= n:
        from scipy.cluster.vq import kmeans  # only when anchors are recomputed (scipy takes ~0.5 s to import)

        k = kmeans(wh / s, n, iter=30, seed=rng)[0] * s
        if len(k) == n:
            return k
    LOGGER.warning(
        f"{PREFIX}WARNING: k-means found fewer than {n} distinct anchors in {len(wh)} boxes, "
        "using random initial anchors"
    )
    return rng.uniform(wh.min(0), wh.max(0), size=(n, 2))


def kmean_anchors(dataset="./data/coco128.yaml", n=9, img_size=640, thr=4.0, gen=1000, verbose=True):
    """Evolve n anchors (float32 (n, 2) pixels, sorted by area) for a dataset by k-means plus a genetic search."""
    if isinstance(dataset, (str, Path)):
        dataset = _dataset_from_yaml(dataset)
    wh0 = label_wh(dataset, img_size)
    wh = wh0[(wh0 >= 2.0).any(1)]  # drop boxes under 2 px on both sides
    if len(wh) < len(wh0):
        LOGGER.warning(
            f"{PREFIX}WARNING: {len(wh0) - len(wh)} of {len(wh0)} labels are smaller than 2 pixels and are ignored"
        )
    if not len(wh):
        raise ValueError(f"{PREFIX}dataset has no labels of 2 pixels or more to fit anchors to")
    rng = np.random.default_rng(0)
    k = _initial_anchors(wh.astype(np.float64), n, rng)
    k = _evolve_anchors(k, wh, thr, gen, rng, verbose, img_size)
    k = k[np.argsort(k.prod(1))].astype(np.float32)
    LOGGER.info(_anchor_summary(k, wh0, thr, img_size))
    return k


def _evolve_anchors(k, wh, thr, gen, rng, verbose, img_size):
    """Genetic search: multiplicative mutations of k, kept when they raise fitness = mean(best * (best > 1/thr))."""

    def fitness(anchors):
        best = anchor_ratios(anchors, wh).max(1)
        return float((best * (best > 1 / thr)).mean())

    f, mp, sigma = fitness(k), 0.9, 0.1  # fitness, mutation probability, mutation sigma
    pbar = tqdm(range(gen), desc=f"{PREFIX}Evolving anchors with Genetic Algorithm:", disable=not gen)
    for _ in pbar:
        v = np.ones(k.shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mp) * rng.random() * rng.standard_normal(k.shape) * sigma + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg
            pbar.desc = f"{PREFIX}Evolving anchors with Genetic Algorithm: fitness = {f:.4f}"
            if verbose:
                LOGGER.info(_anchor_summary(k, wh, thr, img_size))
    return k
