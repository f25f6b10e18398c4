"""Image augmentations for training and the letterbox used everywhere (YOLOv5 v6.1 numerics).

Every random augmentation draws from the numpy Generator `rng` it is given (never from the global streams), so a
sample's augmentation is a function of the generator's seed alone (see utils.reproducibility.seeded_rng).
"""

import math

import cv2
import numpy as np

GRAY = (114, 114, 114)


def letterbox(im, new_shape=(640, 640), color=GRAY, auto=True, scaleFill=False, scaleup=True, stride=32):
    """Resize keeping aspect ratio and pad to new_shape (or to a stride multiple); return im, ratio, (dw, dh)."""
    shape = im.shape[:2]  # h, w
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:  # only shrink (better val mAP)
        r = min(r, 1.0)
    ratio = r, r
    new_unpad = max(int(round(shape[1] * r)), 1), max(int(round(shape[0] * r)), 1)  # extreme aspect: keep 1 px
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:  # minimum rectangle
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scaleFill:  # stretch
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape[1], new_shape[0])
        ratio = new_shape[1] / shape[1], new_shape[0] / shape[0]
    dw, dh = dw / 2, dh / 2  # split the padding between both sides
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, (dw, dh)


def augment_hsv(im, hgain=0.5, sgain=0.5, vgain=0.5, *, rng):
    """Randomly scale hue, saturation and value of a BGR uint8 image in place."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)  # OpenCV hue range is 0..179
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def _affine_matrix(im_shape, out_shape, degrees, translate, scale, shear, perspective, rng):
    """Random 3x3 warp: centre, perspective, rotation+scale, shear, translation; returns (M, scale)."""
    h, w = im_shape
    height, width = out_shape
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2  # move the image centre to the origin
    P = np.eye(3)
    P[2, 0] = rng.uniform(-perspective, perspective)
    P[2, 1] = rng.uniform(-perspective, perspective)
    R = np.eye(3)
    s = rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=rng.uniform(-degrees, degrees), center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height
    return T @ S @ R @ P @ C, s


def _warp_points(xy, M, perspective):
    """Apply the 3x3 matrix M to (n, 2) points."""
    xy = np.concatenate((xy, np.ones((len(xy), 1))), 1) @ M.T
    return xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]


def _warp_boxes(boxes, M, perspective, width, height):
    """Warp the 4 corners of (n, 4) xyxy boxes and return their clipped enclosing boxes."""
    n = len(boxes)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = _warp_points(corners, M, perspective).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    return new


def _warp_segments(segments, M, perspective, width, height):
    """Warp polygon segments and return their clipped enclosing boxes and warped points."""
    boxes, warped = np.zeros((len(segments), 4)), []
    for i, seg in enumerate(segments):
        xy = _warp_points(np.asarray(seg, dtype=np.float64), M, perspective)
        inside = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] <= height)
        pts = xy[inside] if inside.any() else xy
        boxes[i] = pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()
        warped.append(xy)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes, warped


def random_perspective(
    im, targets=(), segments=(), degrees=10, translate=0.1, scale=0.1, shear=10, perspective=0.0, border=(0, 0), *, rng
):
    """Random geometric warp of im and its (n, 5) [cls, x1, y1, x2, y2] pixel targets; returns im, targets."""
    height = im.shape[0] + border[0] * 2
    width = im.shape[1] + border[1] * 2
    M, s = _affine_matrix(im.shape[:2], (height, width), degrees, translate, scale, shear, perspective, rng)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(width, height), borderValue=GRAY)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=GRAY)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 5)
    if len(targets):
        if len(segments):
            new, _ = _warp_segments(segments, M, perspective, width, height)
        else:
            new = _warp_boxes(targets[:, 1:5], M, perspective, width, height)
        keep = box_candidates(targets[:, 1:5].T * s, new.T, area_thr=0.01 if len(segments) else 0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


def box_candidates(box1, box2, wh_thr=2, ar_thr=100, area_thr=0.1, eps=1e-16):
    """Boolean mask of warped boxes box2 (4, n) worth keeping relative to their originals box1 (4, n)."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def mixup(im, labels, im2, labels2, *, rng):
    """Blend two equally sized images with a Beta(32, 32) ratio and concatenate their labels."""
    r = rng.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)
