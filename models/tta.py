"""Test-time augmentation as YOLOv5 v6.1: three scaled/flipped versions of a batch, merged before NMS."""

import math

import torch
import torch.nn.functional as F

SCALES = (1, 0.83, 0.67)
FLIPS = (None, 3, None)  # 3: left-right (the width axis), 2 would be up-down
PAD_VALUE = 0.447  # ImageNet mean grey


def scale_img(img, ratio, gs=32):
    """Resize a BCHW batch by ratio (bilinear) and pad right/bottom to a multiple of gs with 0.447."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    size = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    ph, pw = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return F.pad(img, [0, pw - size[1], 0, ph - size[0]], value=PAD_VALUE)


def descale_pred(p, flip, scale, img_size):
    """Predictions (B, N, 5+nc) xywh of a scaled/flipped input back to the original input's pixels."""
    xy, wh = p[..., 0:2] / scale, p[..., 2:4] / scale
    x, y = xy[..., 0:1], xy[..., 1:2]
    if flip == 2:
        y = img_size[0] - y
    elif flip == 3:
        x = img_size[1] - x
    return torch.cat((x, y, wh, p[..., 4:]), -1)


def clip_augmented(y, nl):
    """Drop the last level (large objects) of the full-size version and the first (small ones) of the smallest.

    A level k holds 4**(nl-1-k) units of rows per unit of the coarsest one, so the rows split into sum(4**k) units.
    """
    units = sum(4**k for k in range(nl))
    y[0] = y[0][:, : -(y[0].shape[1] // units)]
    y[-1] = y[-1][:, (y[-1].shape[1] // units) * 4 ** (nl - 1) :]
    return y


def forward_augment(model, x):
    """Model output on x, 1 x scale, 0.83 x scale flipped and 0.67 x scale merged: (detections, None)."""
    img_size = x.shape[-2:]
    gs = int(model.stride.max())
    y = []
    for scale, flip in zip(SCALES, FLIPS):
        xi = scale_img(x.flip(flip) if flip else x, scale, gs)
        y.append(descale_pred(model(xi)[0], flip, scale, img_size))
    return torch.cat(clip_augmented(y, model.model[-1].nl), 1), None
