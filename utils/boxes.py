"""Box format conversions, coordinate rescaling and non-maximum suppression (numpy and torch)."""

import functools
import importlib.machinery
import importlib.util
import logging
import time
from pathlib import Path

import numpy as np
import torch

LOGGER = logging.getLogger("yolov5")  # configured in utils.general

MAX_WH = 4096  # per-class box offset in pixels; larger than any image side
MAX_NMS = 30000  # most boxes handed to torchvision's NMS kernel per image
TORCHVISION_LIBRARIES = ("_C_stable", "_C")  # the extension holding torchvision's ops: name since 0.29, before it


def _clone(x):
    """Copy of x, keeping its type (torch tensor or numpy array) and dtype."""
    return x.clone() if isinstance(x, torch.Tensor) else np.copy(x)


def xyxy2xywh(x):
    """Convert (n, 4) boxes from [x1, y1, x2, y2] to [x_center, y_center, w, h]."""
    y = _clone(x)
    y[:, 0] = (x[:, 0] + x[:, 2]) / 2
    y[:, 1] = (x[:, 1] + x[:, 3]) / 2
    y[:, 2] = x[:, 2] - x[:, 0]
    y[:, 3] = x[:, 3] - x[:, 1]
    return y


def xywh2xyxy(x):
    """Convert (n, 4) boxes from [x_center, y_center, w, h] to [x1, y1, x2, y2]."""
    y = _clone(x)
    y[:, 0] = x[:, 0] - x[:, 2] / 2
    y[:, 1] = x[:, 1] - x[:, 3] / 2
    y[:, 2] = x[:, 0] + x[:, 2] / 2
    y[:, 3] = x[:, 1] + x[:, 3] / 2
    return y


def xywhn2xyxy(x, w=640, h=640, padw=0, padh=0):
    """Convert normalised [xc, yc, w, h] boxes to pixel [x1, y1, x2, y2] in a (h, w) image shifted by the pad."""
    y = _clone(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy2xywhn(x, w=640, h=640, clip=False, eps=0.0):
    """Convert pixel [x1, y1, x2, y2] boxes to normalised [xc, yc, w, h]; clip=True clips x in place first."""
    if clip:
        clip_coords(x, (h - eps, w - eps))
    y = _clone(x)
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y


def xyn2xy(x, w=640, h=640, padw=0, padh=0):
    """Convert normalised (n, 2) points (e.g. segment vertices) to pixels shifted by the pad."""
    y = _clone(x)
    y[:, 0] = w * x[:, 0] + padw
    y[:, 1] = h * x[:, 1] + padh
    return y


def clip_coords(boxes, shape):
    """Clip [x1, y1, x2, y2] boxes in place to an image of shape (h, w)."""
    h, w = shape[0], shape[1]
    if isinstance(boxes, torch.Tensor):
        boxes[:, 0].clamp_(0, w)
        boxes[:, 1].clamp_(0, h)
        boxes[:, 2].clamp_(0, w)
        boxes[:, 3].clamp_(0, h)
    else:
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes


def scale_coords(img1_shape, coords, img0_shape, ratio_pad=None):
    """Map [x1, y1, x2, y2] boxes (in place) from a letterboxed img1 (h, w) back to the original img0 (h, w)."""
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        gain = ratio_pad[0][0]
        pad = ratio_pad[1]
    coords[:, [0, 2]] -= pad[0]
    coords[:, [1, 3]] -= pad[1]
    coords[:, :4] /= gain
    clip_coords(coords, img0_shape)
    return coords


def _check_thresholds(conf_thres, iou_thres):
    """Raise a clear ValueError for thresholds outside [0, 1]."""
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"utils/boxes.py non_max_suppression: conf_thres={conf_thres} must be in [0, 1]")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"utils/boxes.py non_max_suppression: iou_thres={iou_thres} must be in [0, 1]")


def _apriori_rows(lb, nc, like):
    """Rows [xywh, obj=1, one-hot cls] for apriori labels given as (n, 5) [cls, x, y, w, h]."""
    rows = torch.zeros((len(lb), nc + 5), device=like.device, dtype=like.dtype)
    rows[:, :4] = lb[:, 1:5]
    rows[:, 4] = 1.0
    rows[torch.arange(len(lb)), lb[:, 0].long() + 5] = 1.0
    return rows


def _candidates(x, conf_thres, multi_label):
    """From rows [xywh, obj, cls scores*obj] build (n, 6) [x1, y1, x2, y2, score, cls] above conf_thres."""
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
        return torch.cat((box[i], x[i, j + 5, None], j[:, None].float()), 1)
    conf, j = x[:, 5:].max(1, keepdim=True)
    return torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]


def _load_torchvision_ops():
    """Load torchvision's compiled ops library as its own loader does (torch.ops.load_library), without importing
    the torchvision package: its __init__ imports the models and datasets and, through them, torch._dynamo
    (seconds of start-up). True when the library was found and loaded."""
    spec = importlib.util.find_spec("torchvision")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations)))
    finder = importlib.machinery.FileFinder(
        str(folder), (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    )
    for name in TORCHVISION_LIBRARIES:
        lib = finder.find_spec(name)
        if lib is not None:
            try:
                torch.ops.load_library(lib.origin)
            except OSError:
                return False
            return hasattr(torch.ops.torchvision, "nms")
    return False


@functools.cache
def nms_kernel():
    """torchvision's NMS kernel (torch.ops.torchvision.nms, CPU and CUDA): the ops library alone when it can be
    found, else through `import torchvision` (other layouts, e.g. Windows DLL folders)."""
    if not hasattr(torch.ops.torchvision, "nms") and not _load_torchvision_ops():
        import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)
    return torch.ops.torchvision.nms


def _nms_one(x, iou_thres, agnostic, max_det):
    """Class-offset torchvision NMS on (n, 6) candidates, keeping at most max_det rows."""
    if x.shape[0] > MAX_NMS:
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]
    offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)  # separates classes so they never suppress each other
    keep = nms_kernel()(x[:, :4] + offsets, x[:, 4], iou_thres)
    return x[keep[:max_det]]


def non_max_suppression(
    prediction, conf_thres=0.25, iou_thres=0.45, classes=None, agnostic=False, multi_label=False, labels=(), max_det=300
):
    """NMS on decoded (bs, N, 5+nc) predictions; returns per image an (n, 6) tensor [x1, y1, x2, y2, conf, cls]."""
    _check_thresholds(conf_thres, iou_thres)
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    multi_label &= nc > 1
    time_limit = 10.0 + 0.03 * bs
    start = time.time()
    output = [torch.zeros((0, 6), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]
        if labels and len(labels[xi]):
            x = torch.cat((x, _apriori_rows(labels[xi], nc, x)), 0)
        if not x.shape[0]:
            continue
        x[:, 5:] *= x[:, 4:5]  # x is a copy (boolean indexing), so the input is untouched
        x = _candidates(x, conf_thres, multi_label)
        if classes is not None:
            x = x[(x[:, 5:6] == torch.tensor(classes, device=x.device)).any(1)]
        if not x.shape[0]:
            continue
        output[xi] = _nms_one(x, iou_thres, agnostic, max_det)
        if time.time() - start > time_limit:
            LOGGER.warning(f"WARNING: NMS time limit {time_limit:.3f}s exceeded")
            break
    return output
