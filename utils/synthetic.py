"""Deterministic synthetic 'shapes' detection dataset (circle, square, triangle, cross) in YOLO format."""

from pathlib import Path

import cv2
import numpy as np

NAMES = ["circle", "square", "triangle", "cross"]
COLORS = [(40, 40, 220), (40, 200, 40), (220, 90, 30), (30, 220, 230)]  # BGR: red, green, blue, yellow


def _background(rng, h, w):
    """Gray-ish textured background: smooth low-frequency blobs plus per-pixel noise."""
    coarse = rng.uniform(60, 190, size=(rng.integers(3, 8), rng.integers(3, 8), 1))
    tint = rng.uniform(0.85, 1.15, size=(1, 1, 3))
    base = cv2.resize(coarse * tint, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, 3)
    noise = rng.normal(0, rng.uniform(4, 14), size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _polygon(cls, cx, cy, size, angle):
    """Integer vertices of a square, triangle or cross of the given size rotated by angle (radians)."""
    if cls == 1:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.5
    elif cls == 2:
        pts = np.array([[0, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    else:
        a, b = 0.5, 0.16  # arm half-length and half-width
        pts = np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.round(pts @ rot.T * size + (cx, cy)).astype(np.int32)


def _draw(im, rng, cls, cx, cy, size):
    """Draw one object and return its pixel box x1, y1, x2, y2 (edges of the covered pixels)."""
    color = np.clip(np.array(COLORS[cls]) + rng.integers(-25, 26, 3), 0, 255).tolist()
    if cls == 0:
        r = size // 2
        cv2.circle(im, (cx, cy), r, color, -1, lineType=cv2.LINE_8)
        return cx - r, cy - r, cx + r + 1, cy + r + 1
    angle = rng.uniform(0, np.pi / 2) if cls != 2 else rng.uniform(-0.3, 0.3)
    pts = _polygon(cls, cx, cy, size, angle)
    cv2.fillPoly(im, [pts], color, lineType=cv2.LINE_8)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1


def _iou(box, boxes):
    """IoU of one xyxy box against an (n, 4) array."""
    if not len(boxes):
        return np.zeros(0)
    b = np.asarray(boxes, dtype=np.float64)
    iw = (np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0])).clip(0)
    ih = (np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1])).clip(0)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)


def make_image(rng):
    """One synthetic image (BGR uint8) and its (n, 5) YOLO labels [cls, x, y, w, h] normalised."""
    h, w = (int(v) for v in rng.integers(224, 289, size=2))
    im = _background(rng, h, w)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):  # find a spot that does not hide earlier objects
            cls, size = int(rng.integers(0, len(NAMES))), int(rng.integers(24, 90))
            r = int(np.ceil(0.71 * size)) + 1  # half-diagonal: a rotated square stays inside the image
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            if (_iou((cx - r, cy - r, cx + r, cy + r), boxes) < 0.05).all():
                break
        else:
            continue
        x1, y1, x2, y2 = _draw(im, rng, cls, cx, cy, size)
        boxes.append((x1, y1, x2, y2))
        labels.append((cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
    return im, np.array(labels, dtype=np.float64).reshape(-1, 5)


def _write_split(root, split, n, seed):
    """Write n images and label files for one split, seeded independently of the other splits."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    im_dir, lb_dir = root / "images" / split, root / "labels" / split
    im_dir.mkdir(parents=True, exist_ok=True)
    lb_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im, labels = make_image(rng)
        cv2.imwrite(str(im_dir / f"{split}_{i:04d}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows = [f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}" for c, x, y, bw, bh in labels]
        (lb_dir / f"{split}_{i:04d}.txt").write_text("\n".join(rows) + "\n")


def make_shapes(path="datasets/shapes", n_train=240, n_val=60, seed=0):
    """Generate the shapes dataset under path (images/{train,val}, labels/{train,val}); returns the root Path."""
    root = Path(path)
    _write_split(root, "train", n_train, seed)
    _write_split(root, "val", n_val, seed)
    return root
