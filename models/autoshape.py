"""The Python API model: images of any kind in, NMS-filtered Detections out (YOLOv5 v6.1's AutoShape)."""

import io
import urllib.error
import urllib.request
from copy import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from utils.augmentations import letterbox
from utils.boxes import non_max_suppression, scale_coords, xyxy2xywh
from utils.general import LOGGER, colorstr, increment_path, make_divisible
from utils.plots import Annotator, colors, save_one_box
from utils.torch_utils import time_sync


def open_image(im, i):
    """(HWC uint8 RGB numpy image, file name) from a path, URL, PIL image or numpy array."""
    f = f"image{i}"
    if isinstance(im, (str, Path)):
        f = str(im)
        im = Image.open(io.BytesIO(fetch_bytes(f)) if f.lower().startswith(("http://", "https://")) else f)
        f = f.split("?")[0]
    if isinstance(im, Image.Image):
        f = getattr(im, "filename", "") or f
        im = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    if not isinstance(im, np.ndarray):
        raise TypeError(
            f"AutoShape: unsupported input {type(im).__name__}; pass a path, URL, PIL image, numpy "
            f"HWC image, BCHW tensor or a list of these"
        )
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, 2)
    if im.shape[0] < 5 and im.shape[2] >= 5:  # CHW
        im = im.transpose(1, 2, 0)
    return np.ascontiguousarray(im[..., :3]), Path(f).with_suffix(".jpg").name


def fetch_bytes(url, timeout=30):
    """The body of an http(s) URL; ConnectionError with one line on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(f"could not read image {url}: {getattr(e, 'reason', e)}") from None


class AutoShape(nn.Module):
    """Wraps a detector so it takes paths, URLs, PIL, numpy or lists and returns Detections after NMS."""

    conf = 0.25  # NMS confidence threshold
    iou = 0.45  # NMS IoU threshold
    agnostic = False  # class-agnostic NMS
    multi_label = False  # several labels per box
    classes = None  # keep only these class indices, e.g. [0, 15, 16]
    max_det = 1000  # maximum detections per image

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.names = list(model.names)
        stride = model.stride
        self.stride = int(stride.max()) if torch.is_tensor(stride) else int(stride)
        self.input_shape = getattr(model, "input_shape", None)  # fixed (b, c, h, w) of a static export

    def _device(self):
        p = next(self.model.parameters(), None)
        return p.device if p is not None else getattr(self.model, "device", torch.device("cpu"))

    @torch.no_grad()
    def forward(self, imgs, size=640, augment=False):
        """Detections for one image or a list; a BCHW tensor goes straight to the model (no NMS), as in v6.1."""
        t = [time_sync()]
        if isinstance(imgs, torch.Tensor):
            return self.model(imgs.to(self._device()), **({"augment": True} if augment else {}))
        ims, files = zip(*(open_image(im, i) for i, im in enumerate(imgs if isinstance(imgs, list) else [imgs])))
        shape = self._batch_shape(ims, size)
        x = np.stack([letterbox(im, shape, auto=False)[0] for im in ims]).transpose(0, 3, 1, 2)
        x = torch.from_numpy(x).to(self._device()).float() / 255
        t.append(time_sync())
        y = self._infer(x, augment)
        t.append(time_sync())
        y = non_max_suppression(
            y, self.conf, self.iou, self.classes, self.agnostic, self.multi_label, max_det=self.max_det
        )
        for im, det in zip(ims, y):
            scale_coords(shape, det[:, :4], im.shape)
        t.append(time_sync())
        return Detections(list(ims), y, list(files), t, self.names, x.shape)

    def _batch_shape(self, ims, size):
        """[h, w] for the batch: the largest image scaled to size, padded to the stride (or a static export's)."""
        if self.input_shape:
            return list(self.input_shape[2:])
        size = (size, size) if isinstance(size, int) else size
        g = max(size) / max(max(im.shape[:2]) for im in ims)
        hw = np.array([[d * g for d in im.shape[:2]] for im in ims]).max(0)
        return [make_divisible(d, self.stride) for d in hw]

    def _infer(self, x, augment):
        """Decoded predictions; a static export with batch 1 gets the images one at a time."""
        kwargs = {"augment": True} if augment else {}
        if self.input_shape and self.input_shape[0] != x.shape[0]:
            return torch.cat([self.model(xi[None], **kwargs)[0] for xi in x])
        return self.model(x, **kwargs)[0]


class Detections:
    """Results of AutoShape: boxes per image in four layouts, and print/show/save/crop/render/pandas/tolist."""

    def __init__(self, imgs, pred, files, times=(0, 0, 0, 0), names=None, shape=None):
        self.imgs, self.pred, self.files = imgs, pred, files
        self.names = names
        gn = [torch.tensor([*(im.shape[1], im.shape[0]) * 2, 1, 1], device=p.device) for im, p in zip(imgs, pred)]
        self.xyxy = pred  # (n, 6) per image: x1, y1, x2, y2, confidence, class in pixels
        self.xywh = [torch.cat((xyxy2xywh(x[:, :4]), x[:, 4:]), 1) for x in pred]
        self.xyxyn = [x / g for x, g in zip(self.xyxy, gn)]
        self.xywhn = [x / g for x, g in zip(self.xywh, gn)]
        self.n = len(pred)
        self.t = tuple((times[i + 1] - times[i]) * 1000 / self.n for i in range(3)) if len(times) == 4 else (0,) * 3
        self.s = tuple(shape) if shape is not None else None

    def _summary(self, i, det):
        """'image 1/2: 720x1280 2 persons, 1 tie' (or '(no detections)')."""
        im = self.imgs[i]
        s = f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} "
        if not len(det):
            return s + "(no detections)"
        counts = [(int((det[:, 5] == c).sum()), self.names[int(c)]) for c in det[:, 5].unique()]
        return s + ", ".join(f"{n} {name}{'s' * (n > 1)}" for n, name in counts)

    def _annotated(self, i, det):
        """Image i with boxes and labels drawn (RGB numpy)."""
        annotator = Annotator(self.imgs[i].copy(), example=str(self.names))
        for *box, conf, cls in reversed(det).tolist():
            annotator.box_label(box, f"{self.names[int(cls)]} {conf:.2f}", color=colors(int(cls)))
        return annotator.result()

    def print(self):
        """Log one line per image and the speed line."""
        for i, det in enumerate(self.pred):
            LOGGER.info(self._summary(i, det))
        LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {self.s}" % self.t)

    def __str__(self):
        return "\n".join(self._summary(i, det) for i, det in enumerate(self.pred))

    def show(self):
        """Open each annotated image in the system's image viewer."""
        for i, det in enumerate(self.pred):
            Image.fromarray(self._annotated(i, det)).show(self.files[i])

    def save(self, save_dir="runs/detect/exp"):
        """Write the annotated images into a new save_dir (incremented: exp, exp2, ...); returns the folder."""
        save_dir = increment_path(save_dir, exist_ok=save_dir != "runs/detect/exp", mkdir=True)
        for i, det in enumerate(self.pred):
            Image.fromarray(self._annotated(i, det)).save(save_dir / self.files[i])
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {colorstr('bold', save_dir)}")
        return save_dir

    def crop(self, save=True, save_dir="runs/detect/exp"):
        """Crops of every detection as dicts (box, conf, cls, label, im), saved under save_dir/crops/<name>/."""
        save_dir = increment_path(save_dir, exist_ok=save_dir != "runs/detect/exp", mkdir=True) if save else None
        crops = []
        for i, det in enumerate(self.pred):
            for *box, conf, cls in reversed(det).tolist():
                file = (save_dir / "crops" / self.names[int(cls)] / self.files[i]) if save else Path("im.jpg")
                crops.append(
                    {
                        "box": box,
                        "conf": conf,
                        "cls": cls,
                        "label": f"{self.names[int(cls)]} {conf:.2f}",
                        "im": save_one_box(box, self.imgs[i][..., ::-1], file=file, BGR=True, save=save),
                    }
                )
        if save:
            LOGGER.info(f"Saved results to {colorstr('bold', save_dir)}")
        return crops

    def render(self):
        """Draw the detections into self.imgs and return them (RGB numpy images)."""
        self.imgs = [self._annotated(i, det) for i, det in enumerate(self.pred)]
        return self.imgs

    def pandas(self):
        """A copy whose xyxy, xyxyn, xywh, xywhn are lists of pandas DataFrames (one per image)."""
        import pandas as pd

        new = copy(self)
        ca = "xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"
        cb = "xcenter", "ycenter", "width", "height", "confidence", "class", "name"
        for k, columns in zip(("xyxy", "xyxyn", "xywh", "xywhn"), (ca, ca, cb, cb)):
            rows = [[r[:5] + [int(r[5]), self.names[int(r[5])]] for r in x.tolist()] for x in getattr(self, k)]
            setattr(new, k, [pd.DataFrame(r, columns=list(columns)) for r in rows])
        return new

    def tolist(self):
        """One Detections object per image."""
        return [
            Detections([self.imgs[i]], [self.pred[i]], [self.files[i]], names=self.names, shape=self.s)
            for i in range(self.n)
        ]

    def __len__(self):
        return self.n
