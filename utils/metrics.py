"""Detection metrics: IoU variants, prediction matching, COCO-style AP, confusion matrix, fitness, their plots."""

import math
from pathlib import Path

import numpy as np
import torch

from utils.atomic import save_figure
from utils.figures import subplots
from utils.general import LOGGER

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 only has trapz


def fitness(x):
    """Model fitness from rows [P, R, mAP@.5, mAP@.5:.95]: 0.1 * mAP@.5 + 0.9 * mAP@.5:.95."""
    w = np.array([0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x)[:, :4] * w).sum(1)


def _upcast(t):
    """float16/bfloat16 -> float32 (products of coordinates overflow FP16); float32/64 and integers as they are."""
    return t.float() if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64) else t


def box_iou(box1, box2):
    """Pairwise IoU (n, m) of [x1, y1, x2, y2] boxes box1 (n, 4) and box2 (m, 4), computed in the order and
    precision of torchvision.ops.box_iou (same results, without importing torchvision)."""
    b1, b2 = _upcast(box1), _upcast(box2)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = torch.max(box1[:, None, :2], box2[None, :, :2])
    rb = torch.min(box1[:, None, 2:], box2[None, :, 2:])
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def _corners(box, xywh):
    """Split (..., 4) boxes into x1, y1, x2, y2 tensors."""
    a, b, c, d = box.unbind(-1)
    if xywh:
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    return a, b, c, d


def bbox_iou(box1, box2, xywh=True, GIoU=False, DIoU=False, CIoU=False, eps=1e-7):
    """Elementwise IoU (or GIoU/DIoU/CIoU) of broadcastable (..., 4) boxes; returns shape (...)."""
    b1_x1, b1_y1, b1_x2, b1_y2 = _corners(box1, xywh)
    b2_x1, b2_y1, b2_x2, b2_y2 = _corners(box2, xywh)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box width
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)  # enclosing box height
    if GIoU:
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + eps  # squared enclosing diagonal
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # squared centre distance
    if DIoU:
        return iou - rho2 / c2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2  # aspect-ratio consistency
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def _unique_first(pairs, column):
    """Rows of pairs (already in priority order) keeping the first row for each value in `column`."""
    return pairs[np.unique(pairs[:, column], return_index=True)[1]]


def _by_iou_desc(pairs, ious):
    """Reorder (pairs, ious) by IoU, highest first."""
    order = ious.argsort()[::-1]
    return pairs[order], ious[order]


def match_predictions(detections, labels, iouv):
    """Bool (n_det, len(iouv)) 'correct' matrix: one-to-one class-aware matches at IoU >= iouv[0] (v6.1 val)."""
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    iou = box_iou(labels[:, 1:], detections[:, :4])
    li, di = torch.where((iou >= iouv[0]) & (labels[:, 0:1] == detections[:, 5]))
    if li.shape[0]:
        pairs = torch.stack((li, di), 1).cpu().numpy()
        ious = iou[li, di].cpu().numpy()
        pairs, ious = _by_iou_desc(pairs, ious)
        pairs = np.concatenate((pairs, np.arange(len(pairs))[:, None]), 1)  # column 2 indexes ious
        pairs = _unique_first(_unique_first(pairs, 1), 0)
        correct[pairs[:, 1]] = ious[pairs[:, 2], None] >= iouv.cpu().numpy()
    return torch.tensor(correct, dtype=torch.bool, device=iouv.device)


def compute_ap(recall, precision):
    """COCO 101-point AP of one recall/precision curve; returns ap, precision envelope, padded recall."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # monotone non-increasing envelope
    x = np.linspace(0, 1, 101)
    ap = trapezoid(np.interp(x, mrec, mpre), x)
    return ap, mpre, mrec


def _class_curves(tp, conf, n_labels, px, eps):
    """Recall and precision of one class sampled on confidence grid px, plus its AP per IoU column and PR curve."""
    fpc = (1 - tp).cumsum(0)
    tpc = tp.cumsum(0)
    recall = tpc / (n_labels + eps)
    precision = tpc / (tpc + fpc)
    r = np.interp(-px, -conf, recall[:, 0], left=0)  # conf decreases, so interpolate on -conf
    p = np.interp(-px, -conf, precision[:, 0], left=1)
    ap, pr_curve = np.zeros(tp.shape[1]), None
    for j in range(tp.shape[1]):
        ap[j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
        if j == 0:
            pr_curve = np.interp(px, mrec, mpre)
    return r, p, ap, pr_curve


def _plot_curves(px, py, ap, p, r, f1, save_dir, names):
    """Write PR, F1, P and R curve plots into save_dir."""
    save_dir = Path(save_dir)
    plot_pr_curve(px, py, ap, save_dir / "PR_curve.png", names)
    plot_mc_curve(px, f1, save_dir / "F1_curve.png", names, ylabel="F1")
    plot_mc_curve(px, p, save_dir / "P_curve.png", names, ylabel="Precision")
    plot_mc_curve(px, r, save_dir / "R_curve.png", names, ylabel="Recall")


def _present_names(names, classes):
    """Names (dict index -> name, renumbered from 0) of the classes present in the targets."""
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    return {i: lookup.get(int(c), str(int(c))) for i, c in enumerate(classes)}


def ap_per_class(tp, conf, pred_cls, target_cls, plot=False, save_dir=".", names=(), eps=1e-16):
    """Per-class P, R, AP (nc, n_iou), F1 at the max-mean-F1 confidence, and the target classes (int)."""
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes = np.unique(target_cls)
    px, py = np.linspace(0, 1, 1000), []
    ap = np.zeros((len(classes), tp.shape[1]))
    p, r = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        n_labels = (target_cls == c).sum()
        if mine.sum() == 0 or n_labels == 0:
            continue
        r[ci], p[ci], ap[ci], pr_curve = _class_curves(tp[mine], conf[mine], n_labels, px, eps)
        py.append(pr_curve)
    f1 = 2 * p * r / (p + r + eps)
    if plot:
        _plot_curves(px, py, ap, p, r, f1, save_dir, _present_names(names, classes))
    i = f1.mean(0).argmax()
    return p[:, i], r[:, i], ap, f1[:, i], classes.astype(int)


class ConfusionMatrix:
    """Detection confusion matrix (nc+1, nc+1): rows predicted class, columns true class, index nc = background."""

    def __init__(self, nc, conf=0.25, iou_thres=0.45):
        """Empty matrix for nc classes; detections below conf are ignored, matches need IoU > iou_thres."""
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres

    def _matches(self, detections, labels):
        """(k, 2) int [label_index, detection_index] one-to-one matches, best IoU first."""
        iou = box_iou(labels[:, 1:], detections[:, :4])
        li, di = torch.where(iou > self.iou_thres)
        if not li.shape[0]:
            return np.zeros((0, 2), dtype=int)
        pairs, ious = torch.stack((li, di), 1).cpu().numpy(), iou[li, di].cpu().numpy()
        pairs, ious = _by_iou_desc(pairs, ious)
        keep = np.unique(pairs[:, 1], return_index=True)[1]
        pairs, ious = _by_iou_desc(pairs[keep], ious[keep])
        return _unique_first(pairs, 0)

    def process_batch(self, detections, labels):
        """Accumulate one image: detections (n, 6) [xyxy, conf, cls], labels (m, 5) [cls, xyxy]."""
        detections = detections[detections[:, 4] > self.conf]
        true_cls = labels[:, 0].int().tolist()
        pred_cls = detections[:, 5].int().tolist()
        matches = self._matches(detections, labels)
        for li, tc in enumerate(true_cls):
            hit = matches[matches[:, 0] == li]
            row = pred_cls[hit[0, 1]] if len(hit) == 1 else self.nc
            self.matrix[row, tc] += 1
        if len(matches):  # as in v6.1, unmatched detections count only when the image has some match
            for di, pc in enumerate(pred_cls):
                if not (matches[:, 1] == di).any():
                    self.matrix[pc, self.nc] += 1

    def tp_fp(self):
        """Per-class true positives and false positives (background row/column excluded)."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, normalize=True, save_dir="", names=()):
        """Save confusion_matrix.png."""
        plot_confusion_matrix(self.matrix, self.nc, names, save_dir, normalize)

    def print(self):
        """Print the matrix, one row per line."""
        for row in self.matrix:
            print(" ".join(map(str, row)))


def _finish_curve_plot(fig, ax, xlabel, ylabel, save_dir):
    """Label, bound, legend and save a per-class curve plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    save_figure(fig, Path(save_dir), dpi=250)


def plot_pr_curve(px, py, ap, save_dir="pr_curve.png", names=()):
    """Plot precision-recall curves per class (when < 21 classes) and their mean, labelled with AP@0.5."""
    if not len(py):
        LOGGER.warning(f"WARNING: metrics.py plot_pr_curve: no classes to plot, {save_dir} not written")
        return
    fig, ax = subplots(1, 1, figsize=(9, 6), tight_layout=True)
    py = np.stack(py, axis=1)
    ap = np.asarray(ap).reshape(py.shape[1], -1)
    for i, y in enumerate(py.T):
        label = f"{names[i]} {ap[i, 0]:.3f}" if 0 < len(names) < 21 else None
        ax.plot(px, y, linewidth=1, label=label, color=None if label else "grey")
    ax.plot(px, py.mean(1), linewidth=3, color="blue", label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    _finish_curve_plot(fig, ax, "Recall", "Precision", save_dir)


def plot_mc_curve(px, py, save_dir="mc_curve.png", names=(), xlabel="Confidence", ylabel="Metric"):
    """Plot a metric-vs-confidence curve per class (when < 21 classes) and the mean with its best value."""
    fig, ax = subplots(1, 1, figsize=(9, 6), tight_layout=True)
    py = np.asarray(py).reshape(-1, len(px))
    for i, y in enumerate(py):
        label = f"{names[i]}" if 0 < len(names) < 21 else None
        ax.plot(px, y, linewidth=1, label=label, color=None if label else "grey")
    y = py.mean(0)
    ax.plot(px, y, linewidth=3, color="blue", label=f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}")
    _finish_curve_plot(fig, ax, xlabel, ylabel, save_dir)


def plot_confusion_matrix(matrix, nc, names, save_dir, normalize=True):
    """Save confusion_matrix.png for an (nc+1, nc+1) [predicted, true] matrix including background FP/FN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (nc + 1, nc + 1):
        raise ValueError(f"metrics.py plot_confusion_matrix: matrix shape {matrix.shape} != ({nc + 1}, {nc + 1})")
    array = matrix / ((matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
    array[array < 0.005] = np.nan  # hide near-zero cells
    fig, ax = subplots(1, 1, figsize=(12, 9), tight_layout=True)
    im = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax)
    if nc < 30:
        white_above = 0.5 if normalize else 0.5 * np.nanmax(array)
        for (r, c), v in np.ndenumerate(array):
            if not np.isnan(v):
                ax.text(
                    c,
                    r,
                    f"{v:.2f}" if normalize else f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > white_above else "black",
                )
    if 0 < len(names) == nc and nc < 30:
        ticks = range(nc + 1)
        ax.set_xticks(ticks)
        ax.set_xticklabels([names[i] for i in range(nc)] + ["background FN"], rotation=90)
        ax.set_yticks(ticks)
        ax.set_yticklabels([names[i] for i in range(nc)] + ["background FP"])
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    save_figure(fig, Path(save_dir) / "confusion_matrix.png", dpi=250)
