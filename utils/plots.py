"""Plotting utilities: box annotation, batch mosaics, label statistics, results and evolution plots."""

import csv
import math
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from utils.atomic import atomic_write, save_figure
from utils.figures import dejavu_sans_path, figure, subplots
from utils.general import LOGGER, clip_coords, increment_path, xywh2xyxy, xyxy2xywh
from utils.metrics import fitness

RESULTS_PLOT_ORDER = (1, 2, 3, 4, 5, 8, 9, 10, 6, 7)  # train losses + P, R on top; val losses + mAPs below


class Colors:
    """YOLOv5 v6.1's palette of 20 colours, indexed cyclically: colors(i, bgr=False) -> (r, g, b)."""

    HEX = (
        "FF3838",
        "FF9D97",
        "FF701F",
        "FFB21D",
        "CFD231",
        "48F90A",
        "92CC17",
        "3DDB86",
        "1A9334",
        "00D4BB",
        "2C99A8",
        "00C2FF",
        "344593",
        "6473FF",
        "0018EC",
        "8438FF",
        "520085",
        "CB38FF",
        "FF95C8",
        "FF37C7",
    )

    def __init__(self):
        """Decode the hex strings into RGB tuples."""
        self.palette = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in self.HEX]
        self.n = len(self.palette)

    def __call__(self, i, bgr=False):
        """Return colour i (mod 20) as an RGB tuple, or BGR when bgr=True."""
        c = self.palette[int(i) % self.n]
        return (c[2], c[1], c[0]) if bgr else c


colors = Colors()


def load_font(size=10):
    """Return a TrueType font of the given pixel size (matplotlib's bundled DejaVu Sans, with Unicode coverage)."""
    path = dejavu_sans_path()
    try:
        return ImageFont.truetype(path, max(int(size), 1))
    except OSError:
        LOGGER.warning(f"WARNING: plots.py could not open font {path}; using Pillow's default font")
        return ImageFont.load_default(size=max(int(size), 1))


class Annotator:
    """Draw boxes, labels and text on an image with OpenCV (default) or PIL (pil=True or non-ASCII labels)."""

    def __init__(self, im, line_width=None, font_size=None, pil=False, example="abc"):
        """Wrap a HWC uint8 numpy image (or a PIL image when pil=True) for drawing."""
        self.pil = pil or not str(example).isascii() or isinstance(im, Image.Image)
        if self.pil:
            self.im = im if isinstance(im, Image.Image) else Image.fromarray(np.ascontiguousarray(im))
            self.draw = ImageDraw.Draw(self.im)
            self.font = load_font(font_size or max(round(sum(self.im.size) / 2 * 0.035), 12))
            size_sum = sum(self.im.size)
        else:
            if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.dtype == np.uint8 and im.data.c_contiguous):
                raise TypeError(
                    "plots.py Annotator: image must be a contiguous HWC uint8 numpy array "
                    "(use np.ascontiguousarray(im))"
                )
            self.im = im
            size_sum = sum(im.shape)
        self.lw = line_width or max(round(size_sum / 2 * 0.003), 2)

    @property
    def size(self):
        """Image (width, height)."""
        return self.im.size if self.pil else (self.im.shape[1], self.im.shape[0])

    def _text_size(self, text):
        """Width and height of text in pixels with the current font."""
        if self.pil:
            x0, y0, x1, y1 = self.draw.textbbox((0, 0), text, font=self.font)
            return x1 - x0, y1
        tf = max(self.lw - 1, 1)
        return cv2.getTextSize(text, 0, fontScale=self.lw / 3, thickness=tf)[0]

    def _label_origin(self, p1, w, h):
        """Top-left corner of a w x h label background anchored at box corner p1, kept inside the image."""
        iw, ih = self.size
        x = min(max(p1[0], 0), max(iw - w, 0))
        y = p1[1] - h if p1[1] - h >= 0 else p1[1]  # above the box, or just below its top edge when no room
        return x, min(max(y, 0), max(ih - h, 0))

    def box_label(self, box, label="", color=(128, 128, 128), txt_color=(255, 255, 255)):
        """Draw an xyxy box and, when label is given, the label text on a filled background of the box colour."""
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        color, txt_color = tuple(int(c) for c in color), tuple(int(c) for c in txt_color)
        self.rectangle((p1, p2), outline=color, width=self.lw)
        if not label:
            return
        tw, th = self._text_size(label)
        pad = 3 if not self.pil else 1
        x, y = self._label_origin(p1, tw + pad, th + pad)
        self.rectangle(((x, y), (x + tw + pad, y + th + pad)), fill=color)
        self.text((x + pad // 2, y), label, txt_color=txt_color)

    def rectangle(self, xy, fill=None, outline=None, width=1):
        """Draw a rectangle given as ((x1, y1), (x2, y2)) or [x1, y1, x2, y2]; fill and/or outline colours."""
        xy = np.asarray(xy, dtype=float).reshape(-1)
        p1, p2 = (int(xy[0]), int(xy[1])), (int(xy[2]), int(xy[3]))
        if self.pil:
            self.draw.rectangle((p1, p2), fill=fill, outline=outline, width=width)
            return
        if fill is not None:
            cv2.rectangle(self.im, p1, p2, fill, thickness=-1, lineType=cv2.LINE_AA)
        if outline is not None:
            cv2.rectangle(self.im, p1, p2, outline, thickness=width, lineType=cv2.LINE_AA)

    def text(self, xy, text, txt_color=(255, 255, 255)):
        """Write text with its top-left corner at xy."""
        x, y = int(xy[0]), int(xy[1])
        if self.pil:
            self.draw.text((x, y), text, fill=txt_color, font=self.font)
            return
        tf = max(self.lw - 1, 1)
        h = self._text_size(text)[1]
        cv2.putText(self.im, text, (x, y + h), 0, self.lw / 3, txt_color, thickness=tf, lineType=cv2.LINE_AA)

    def result(self):
        """Return the annotated image as a numpy array."""
        return np.asarray(self.im)


def save_one_box(xyxy, im, file=Path("im.jpg"), gain=1.02, pad=10, square=False, BGR=False, save=True):
    """Crop an xyxy box (grown by gain and pad, optionally squared) from BGR image im; save it as a new jpg.

    Returns the crop in BGR order when BGR=True, else RGB. The saved file always has the right colours.
    """
    b = xyxy2xywh(torch.as_tensor(xyxy, dtype=torch.float32).view(-1, 4))
    if square:
        b[:, 2:] = b[:, 2:].max(1, keepdim=True)[0]
    b[:, 2:] = b[:, 2:] * gain + pad
    box = xywh2xyxy(b).long()
    clip_coords(box, im.shape)
    x1, y1, x2, y2 = box[0].tolist()
    crop = im[y1:y2, x1:x2]
    if save:
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(increment_path(file).with_suffix(".jpg")), np.ascontiguousarray(crop))
    return crop if BGR else crop[..., ::-1]


def output_to_target(output):
    """Per-image NMS outputs (n, 6) [xyxy, conf, cls] -> one (N, 7) [batch_id, cls, x, y, w, h, conf] array."""
    rows = []
    for i, det in enumerate(output):
        det = torch.as_tensor(det).detach().float().cpu().view(-1, 6)
        batch_id = torch.full((len(det), 1), float(i))
        rows.append(torch.cat((batch_id, det[:, 5:6], xyxy2xywh(det[:, :4]), det[:, 4:5]), 1))
    return torch.cat(rows, 0).numpy() if rows else np.zeros((0, 7), dtype=np.float32)


def _to_numpy(x):
    """A float32 numpy copy of a tensor or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.array(x, dtype=np.float32)


def _batch_mosaic(images, ns, max_size):
    """Tile up to ns*ns CHW images into one white-backed uint8 mosaic, shrunk so its side is at most max_size."""
    bs, _, h, w = images.shape
    mosaic = np.full((ns * h, ns * w, 3), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        y, x = h * (i // ns), w * (i % ns)
        mosaic[y : y + h, x : x + w] = im.transpose(1, 2, 0).clip(0, 255).astype(np.uint8)
    scale = max_size / ns / max(h, w)
    if scale < 1:
        h, w = math.ceil(scale * h), math.ceil(scale * w)
        mosaic = cv2.resize(mosaic, (ns * w, ns * h))
    return mosaic, h, w, min(scale, 1.0)


def _class_name(names, c):
    """Name of class c from a list or dict of names, or the index itself when it has no name."""
    if isinstance(names, dict):
        return names.get(c, c)
    return names[c] if names is not None and 0 <= c < len(names) else c


def _draw_targets(annotator, ti, names, origin, hw, scale, normalised):
    """Draw one image's targets (labels [id, cls, xywh] or predictions [id, cls, xywh, conf]) on the mosaic."""
    if not len(ti):
        return
    boxes = xywh2xyxy(ti[:, 2:6].copy())
    is_labels = ti.shape[1] == 6
    if normalised:
        boxes[:, [0, 2]] *= hw[1]
        boxes[:, [1, 3]] *= hw[0]
    elif scale < 1:  # pixel boxes of the original batch size
        boxes *= scale
    boxes[:, [0, 2]] += origin[0]
    boxes[:, [1, 3]] += origin[1]
    for j, box in enumerate(boxes.tolist()):
        c = int(ti[j, 1])
        name = _class_name(names, c)
        if is_labels:
            annotator.box_label(box, f"{name}", color=colors(c))
        elif ti[j, 6] > 0.25:
            annotator.box_label(box, f"{name} {ti[j, 6]:.1f}", color=colors(c))


def plot_images(images, targets, paths=None, fname="images.jpg", names=None, max_size=1920, max_subplots=16):
    """Save (and return as RGB uint8) a mosaic of a batch (0..1 or 0..255) with its label or prediction boxes."""
    images, targets = _to_numpy(images), _to_numpy(targets)
    targets = targets.reshape(-1, targets.shape[-1]) if targets.size else np.zeros((0, 6), dtype=np.float32)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"plots.py plot_images: expected a non-empty (bs, 3, h, w) batch, got {images.shape}")
    if images.max() <= 1:
        images *= 255
    images = images[:max_subplots]
    bs = len(images)
    ns = math.ceil(bs**0.5)
    mosaic, h, w, scale = _batch_mosaic(images, ns, max_size)
    normalised = len(targets) and targets[:, 2:6].max() <= 1.01  # else pixel boxes of the input batch
    fs = int((h + w) * ns * 0.01)
    annotator = Annotator(mosaic, line_width=max(round(fs / 10), 1), font_size=fs, pil=True)
    for i in range(bs):
        x, y = w * (i % ns), h * (i // ns)
        annotator.rectangle([x, y, x + w, y + h], outline=(255, 255, 255), width=2)
        if paths is not None and i < len(paths):
            annotator.text((x + 5, y + 5), Path(paths[i]).name[:40], txt_color=(220, 220, 220))
        _draw_targets(annotator, targets[targets[:, 0] == i], names, (x, y), (h, w), scale, normalised)
    fmt = Image.registered_extensions().get(Path(fname).suffix.lower(), "JPEG")
    atomic_write(fname, lambda f: annotator.im.save(f, format=fmt))
    return annotator.result()


def _hist2d_log(x, y, n=100):
    """Log-scaled 2D histogram of (x, y) evaluated at each point, used to colour dense scatter plots."""
    h, xe, ye = np.histogram2d(x, y, n)
    xi = np.clip(np.digitize(x, xe) - 1, 0, h.shape[0] - 1)
    yi = np.clip(np.digitize(y, ye) - 1, 0, h.shape[1] - 1)
    return np.log(h[xi, yi] + 1)


def _box_outlines(labels, n=1000):
    """A white 2000x2000 RGB image with up to n label boxes drawn centred, in their class colours."""
    img = Image.fromarray(np.full((2000, 2000, 3), 255, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    for cls, *_, w, h in labels[:n]:
        box = (1000 - w * 1000, 1000 - h * 1000, 1000 + w * 1000, 1000 + h * 1000)
        draw.rectangle(box, width=1, outline=colors(int(cls)))
    return np.asarray(img)


def _plot_correlogram(xywh, save_dir):
    """Save labels_correlogram.jpg: histograms of x, y, width, height and their pairwise scatter plots."""
    keys = ("x", "y", "width", "height")
    fig, ax = subplots(4, 4, figsize=(8, 8), tight_layout=True)
    for i in range(4):
        for j in range(4):
            a = ax[i, j]
            if i == j:
                a.hist(xywh[:, i], bins=50, color="C0", alpha=0.8)
            elif i > j:
                a.scatter(xywh[:, j], xywh[:, i], c=_hist2d_log(xywh[:, j], xywh[:, i], 50), s=2, cmap="Blues")
            else:
                a.axis("off")
                continue
            a.set_xlabel(keys[j] if i == 3 else "")
            a.set_ylabel(keys[i] if j == 0 else "")
    save_figure(fig, Path(save_dir) / "labels_correlogram.jpg", dpi=200)


def plot_labels(labels, names=(), save_dir=Path("")):
    """Save labels.jpg (class counts, box centres, box sizes, box outlines) and labels_correlogram.jpg."""
    labels = _to_numpy(labels).reshape(-1, 5)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if not len(labels):
        LOGGER.warning(f"WARNING: plots.py plot_labels: no labels to plot, {save_dir / 'labels.jpg'} not written")
        return
    c, xywh = labels[:, 0].astype(int), labels[:, 1:]
    nc = max(int(c.max()) + 1, len(names))
    LOGGER.info(f"Plotting labels to {save_dir / 'labels.jpg'}... ")
    _plot_correlogram(xywh, save_dir)
    fig, ax = subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = ax.ravel()
    counts = np.bincount(c, minlength=nc)
    ax[0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    if 0 < len(names) < 30:
        ax[0].set_xticks(range(len(names)))
        ax[0].set_xticklabels([names[i] for i in range(len(names))], rotation=90, fontsize=10)
    else:
        ax[0].set_xlabel("classes")
    for a, (i, j, kx, ky) in zip(ax[1:3], ((0, 1, "x", "y"), (2, 3, "width", "height"))):
        a.hist2d(xywh[:, i], xywh[:, j], bins=50, range=((0, 1), (0, 1)), cmap="Blues", cmin=1)
        a.set_xlabel(kx)
        a.set_ylabel(ky)
    ax[3].imshow(_box_outlines(labels))
    ax[3].axis("off")
    for a in ax[:3]:
        for s in ("top", "right"):
            a.spines[s].set_visible(False)
    save_figure(fig, save_dir / "labels.jpg", dpi=200)


def _read_csv_columns(file):
    """Read a results/evolve csv with space-padded headers into (stripped header list, float (rows, cols) array)."""
    with open(file, newline="") as f:
        rows = [r for r in csv.reader(f) if any(x.strip() for x in r)]
    if len(rows) < 2:
        raise ValueError(f"plots.py: {file} has no data rows")
    keys = [k.strip() for k in rows[0]]
    try:
        data = np.array([[float(x) for x in r] for r in rows[1:]], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"plots.py: {file} has a non-numeric or ragged row ({e})") from e
    if data.shape[1] != len(keys):
        raise ValueError(f"plots.py: {file} rows have {data.shape[1]} values but the header has {len(keys)}")
    return keys, data


def plot_results(file="path/to/results.csv", dir=""):
    """Plot the first 10 value columns of results.csv (all results*.csv when dir is given) into results.png."""
    save_dir = Path(dir) if dir else Path(file).parent
    files = sorted(save_dir.glob("results*.csv")) if dir else [Path(file)]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"plots.py plot_results: no results csv found at {save_dir if dir else file}")
    fig, ax = subplots(2, 5, figsize=(12, 6), tight_layout=True)
    ax = ax.ravel()
    for f in files:
        keys, data = _read_csv_columns(f)
        if data.shape[1] < 11:
            raise ValueError(f"plots.py plot_results: {f} has {data.shape[1]} columns, expected the 14 of results.csv")
        for a, j in zip(ax, RESULTS_PLOT_ORDER):
            a.plot(data[:, 0], data[:, j], marker=".", label=f.stem, linewidth=2, markersize=8)
            a.set_title(keys[j], fontsize=12)
    ax[1].legend()
    out = save_dir / "results.png"
    save_figure(fig, out, dpi=200)
    return out


def plot_evolve(evolve_csv="path/to/evolve.csv"):
    """Save evolve.png next to evolve.csv: one scatter of each hyperparameter against fitness, best marked."""
    evolve_csv = Path(evolve_csv)
    keys, x = _read_csv_columns(evolve_csv)
    if x.shape[1] <= 7:
        raise ValueError(f"plots.py plot_evolve: {evolve_csv} has no hyperparameter columns after the 7 metrics")
    f = fitness(x)
    j = int(np.argmax(f))
    hyps = keys[7:]
    nc = math.ceil(len(hyps) ** 0.5)
    nr = math.ceil(len(hyps) / nc)
    fig = figure(figsize=(2.5 * nc, 3 * nr), tight_layout=True)
    for i, k in enumerate(hyps):
        v = x[:, 7 + i]
        ax = fig.add_subplot(nr, nc, i + 1)
        ax.scatter(v, f, c=_hist2d_log(v, f, 20), cmap="viridis", alpha=0.8, edgecolors="none")
        ax.plot(v[j], f[j], "k+", markersize=15)
        ax.set_title(f"{k} = {v[j]:.3g}", fontdict={"size": 9})
        if i % nc:
            ax.set_yticks([])
    out = evolve_csv.with_name("evolve.png")
    save_figure(fig, out, dpi=200)
    LOGGER.info(f"Saved {out}")
    return out


def feature_visualization(x, module_type, stage, n=32, save_dir=Path("runs/detect/exp")):
    """Save the first n channels of the first image of feature map x as a grid: stage{stage}_{module}_features.png."""
    if "Detect" in module_type or not isinstance(x, torch.Tensor) or x.ndim != 4:
        return None
    _, channels, height, width = x.shape
    if height < 2 or width < 2:
        return None
    f = Path(save_dir) / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    n = min(n, channels)
    fig, ax = subplots(math.ceil(n / 8), 8, tight_layout=True)
    ax = np.atleast_1d(ax).ravel()
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    maps = x[0].detach().float().cpu().numpy()
    for i, a in enumerate(ax):
        if i < n:
            a.imshow(maps[i])
        a.axis("off")
    LOGGER.info(f"Saving {f}... ({n}/{channels})")
    save_figure(fig, f, dpi=300, bbox_inches="tight")
    return f


@contextmanager
def visualize_features(model, save_dir, n=32):
    """Inside the block, the first forward of each yaml layer of model saves its feature maps into save_dir."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, torch.nn.Sequential):
        LOGGER.warning(f"WARNING: --visualize needs a YOLOv5 model with yaml layers, not {type(model).__name__}")
        yield
        return
    done = set()

    def save(m, inputs, output):
        if m.i not in done:
            done.add(m.i)
            feature_visualization(output, m.type, m.i, n=n, save_dir=save_dir)

    handles = [m.register_forward_hook(save) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


STUDY_COLUMNS = ("P", "R", "mAP@.5", "mAP@.5:.95", "t_preprocess (ms/img)", "t_inference (ms/img)", "t_NMS (ms/img)")


def plot_val_study(files, x, save="study.png"):
    """val.py --task study: each metric against img size, and mAP@.5:.95 against inference time, per weights file."""
    fig, ax = subplots(2, 4, figsize=(12, 6), tight_layout=True)
    ax = ax.ravel()
    for f in files:
        y = np.atleast_2d(np.loadtxt(f))
        metrics = np.concatenate([y[:, :4], y[:, 7:10]], 1)  # drop the 3 loss columns
        label = Path(f).stem.replace("study_", "")
        for i, title in enumerate(STUDY_COLUMNS):
            ax[i].plot(x[: len(y)], metrics[:, i], ".-", linewidth=2, markersize=8, label=label)
            ax[i].set_title(title)
        ax[7].plot(metrics[:, 5], metrics[:, 3], ".-", linewidth=2, markersize=8, label=label)
        for size, t, m in zip(x, metrics[:, 5], metrics[:, 3]):
            ax[7].annotate(str(size), (t, m), fontsize=7)
    ax[7].set_xlabel("inference (ms/img)")
    ax[7].set_ylabel("mAP@.5:.95")
    ax[7].grid(alpha=0.2)
    ax[7].legend(loc="best")
    out = Path(files[0]).parent / save if files else Path(save)
    LOGGER.info(f"Saving {out}...")
    save_figure(fig, out, dpi=200)
    return out
