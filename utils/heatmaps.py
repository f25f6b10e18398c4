"""Class-activation heatmaps of YOLOv5 .pt models with the grad-cam library (pytorch_grad_cam): detect.py --heatmap.

The default, EigenCAM on the layers Detect reads, needs no labels and no gradients: per layer, the activations of
each feature-map cell are projected on their first principal component. The library's EigenCAM is replaced by
OrientedEigenCAM (utils/eigencam.py: same idea, see docs/heatmaps.md for why). Other library methods run as they
are, with the score of the model's own detections as the target they differentiate.

Letterbox padding is kept out of the heat: feature-map cells that lie wholly in the padding take the mean activation
(and gradient) of the image's other cells, so they neither steer the principal component nor set the scale, and the
map is cropped to the unpadded region and resized to the original image before it is scaled to [0, 1].
"""

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.general import LOGGER
from utils.plots import Annotator, colors

SUPPORTED = (  # grad-cam methods that run on YOLOv5 here (docs/heatmaps.md); FEM, KPCA_CAM and EigenCAM need no grads
    "EigenCAM",
    "FEM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "KPCA_CAM",
    "LayerCAM",
    "RandomCAM",
    "XGradCAM",
)
UNSUPPORTED = {  # grad-cam methods that do not: why
    "AblationCAM": "it swaps the target layer for an ablation layer that YOLOv5's layer routing cannot call",
    "EigenGradCAM": "the library's full SVD takes 14-22 s per image at 640",
    "FinerCAM": "it needs a classifier's pairs of class targets",
    "FullGrad": "it ignores the chosen layers and assumes a classifier's bias shapes",
    "ScoreCAM": "it runs one forward per channel of the layer, minutes per image",
    "SegEigenCAM": "the library's full SVD takes 14-22 s per image at 640",
    "ShapleyCAM": "it needs a second backward pass through a graph the library frees",
}
BLEND = 0.5  # weight of the heat colours over the image in the .jpg


class HeatmapError(ValueError):
    """A --heatmap request that cannot be served: model format, layer index or method."""


def is_detect(module):
    """A YOLOv5 Detect head, known by its attributes (utils imports nothing from models)."""
    return all(hasattr(module, a) for a in ("anchor_grid", "nl", "no", "stride"))


class DetectionScore:
    """Target of the gradient methods: the summed scores (objectness x class) of the image's detections."""

    def __init__(self, conf_thres):
        self.conf_thres = conf_thres

    def __call__(self, pred):
        """pred: (n, 5 + nc) decoded predictions of one image; the best score when none passes conf_thres."""
        score = (pred[:, 4:5] * pred[:, 5:]).amax(1).float()
        keep = score > self.conf_thres
        return score[keep].sum() if keep.any() else score.max()


class _Predictions(torch.nn.Module):
    """The backend's decoded predictions (b, n, 5 + nc) alone, the one output the library reads."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend

    def forward(self, x):
        return self.backend(x)[0]


def content_box(input_hw, image_hw):
    """(top, left, h, w) of an image of image_hw inside its letterboxed input_hw, rounded as letterbox() does."""
    gain = min(input_hw[0] / image_hw[0], input_hw[1] / image_hw[1])
    h, w = max(round(image_hw[0] * gain), 1), max(round(image_hw[1] * gain), 1)
    top, left = round((input_hw[0] - h) / 2 - 0.1), round((input_hw[1] - w) / 2 - 0.1)
    return top, left, h, w


def to_image(cam, image_hw):
    """A cam at the letterboxed input size -> the heat of the original image (h, w), float32 in [0, 1]."""
    top, left, h, w = content_box(cam.shape, image_hw)
    heat = cv2.resize(cam[top : top + h, left : left + w], (image_hw[1], image_hw[0]), interpolation=cv2.INTER_LINEAR)
    heat -= heat.min()
    return np.clip(heat / max(heat.max(), 1e-7), 0, 1).astype(np.float32)


def blend(heat, im0, alpha=BLEND):
    """The JET colours of heat (h, w in [0, 1]) over the BGR uint8 image im0."""
    colours = cv2.applyColorMap(np.uint8(np.round(heat * 255)), cv2.COLORMAP_JET)
    return cv2.addWeighted(colours, alpha, im0, 1 - alpha, 0)


def draw_detections(im, det, names):
    """Boxes and 'name conf' labels of det ([xyxy, conf, cls] in pixels of im) drawn on im."""
    annotator = Annotator(im, example=str(names))
    for *xyxy, conf, cls in reversed(det).tolist():
        annotator.box_label(xyxy, f"{names[int(cls)]} {conf:.2f}", color=colors(int(cls), True))
    return annotator.result()


def method_class(name):
    """The grad-cam class of a --heatmap-method name (any case); HeatmapError naming the choices otherwise."""
    key = str(name).lower()
    canonical = next((n for n in SUPPORTED if n.lower() == key), None)
    if canonical is None:
        why = next((f"grad-cam has it, but {v}" for k, v in UNSUPPORTED.items() if k.lower() == key), None)
        why = why or "not a CAM method of the grad-cam library"
        raise HeatmapError(f"--heatmap-method {name}: {why}; choose one of {', '.join(SUPPORTED)}")
    try:  # imported here, not at the top: the library takes seconds to import and detect.py imports this module
        import pytorch_grad_cam

        from utils.eigencam import OrientedEigenCAM
    except ImportError:
        raise HeatmapError("--heatmap needs the grad-cam package: pip install grad-cam") from None

    return OrientedEigenCAM if canonical == "EigenCAM" else getattr(pytorch_grad_cam, canonical)


def _members(backend):
    """The YOLOv5 Models of a .pt backend (several for an ensemble); HeatmapError for exported formats."""
    if not getattr(backend, "pt", False):
        fmt = getattr(backend, "format", type(backend).__name__)
        raise HeatmapError(
            f"--heatmap needs a PyTorch .pt model; {getattr(backend, 'weights', '')} is {fmt}, "
            "an exported format without activations or gradients to read"
        )
    model = backend.model
    return list(model) if isinstance(model, torch.nn.ModuleList) else [model]  # an Ensemble: its members


def target_layers(model, layers=None):
    """The modules whose outputs are read: layers (yaml indices) or by default those Detect reads."""
    if not (hasattr(model, "model") and is_detect(model.model[-1])):
        raise HeatmapError(f"--heatmap needs a YOLOv5 model ending in Detect, not {type(model).__name__}")
    n = len(model.model)
    f = model.model[-1].f
    indices = layers if layers else ([f] if isinstance(f, int) else list(f))
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < n - 1:
            raise HeatmapError(
                f"--heatmap-layer {i}: no such feature layer; this model has layers 0-{n - 2} "
                f"(layer {n - 1} is Detect, whose output is not a feature map)"
            )
    return [model.model[i] for i in indices]


class PaddingFill:
    """reshape_transform of the library: float32 maps whose cells wholly in letterbox padding hold the mean of the
    image's other cells. boxes: per image (top, left, h, w) of its content in input pixels; input_hw: (H, W)."""

    def __init__(self, input_hw, boxes):
        self.input_hw, self.boxes = input_hw, boxes

    def __call__(self, t):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise HeatmapError(f"--heatmap-layer: a chosen layer outputs {shape}, not a (b, c, h, w) feature map")
        with torch.no_grad():
            t = t.float().clone()
            for i, (top, left, h, w) in enumerate(self.boxes):
                rows = self._cells(top, h, self.input_hw[0], t.shape[2])
                cols = self._cells(left, w, self.input_hw[1], t.shape[3])
                inside = t[i][:, rows, cols].clone()
                t[i] = inside.mean((1, 2), keepdim=True)
                t[i][:, rows, cols] = inside
        return t

    @staticmethod
    def _cells(start, length, size, cells):
        """Slice of the cells (`cells` of them over `size` input pixels) that overlap pixels [start, start + length)."""
        s = size / cells
        return slice(math.floor(start / s), min(math.ceil((start + length) / s), cells))


@contextmanager
def _differentiable(models):
    """Detect heads that decode out of place (in-place decoding breaks the backward pass) inside the block."""
    heads = [m.model[-1] for m in models]
    inplace = [h.inplace for h in heads]
    for h in heads:
        h.inplace = False
    try:
        yield
    finally:
        for h, v in zip(heads, inplace):
            h.inplace = v


class Heatmaps:
    """Heatmaps of a DetectMultiBackend .pt model: compute() per batch, save() per image (detect.py --heatmap)."""

    def __init__(self, backend, layers=None, method="EigenCAM", conf_thres=0.25):
        """layers: yaml layer indices (None: those Detect reads); method: a name of SUPPORTED."""
        self.cls = method_class(method)
        self.members = _members(backend)
        self.layers = [m for model in self.members for m in target_layers(model, layers)]
        self.model, self.names, self.conf_thres = _Predictions(backend), backend.names, conf_thres

    def compute(self, im, images_hw):
        """Per image of the NCHW batch im (letterboxed from images of images_hw): its heat, float32 in [0, 1]."""
        fill = PaddingFill(im.shape[2:], [content_box(im.shape[2:], hw) for hw in images_hw])
        cam = self.cls(self.model, self.layers, reshape_transform=fill)
        targets = [DetectionScore(self.conf_thres)] * len(im)
        grads = cam.uses_gradients
        try:
            with torch.set_grad_enabled(grads), _differentiable(self.members) if grads else nullcontext():
                cams = cam(im.detach().requires_grad_(grads), targets=targets)
        finally:
            cam.activations_and_grads.release()
        return [to_image(c, hw) for c, hw in zip(cams, images_hw)]

    def save(self, save_dir, im, i, det, p, im0, frame=0, mode="image"):
        """Write image i of batch im (letterboxed from im0) as <save_dir>/heatmaps/<stem>.jpg and <stem>.npy.

        det: [xyxy, conf, cls] in pixels of im0, drawn on the .jpg; video frames are <stem>_<frame>, as labels."""
        heat = self.compute(im[i : i + 1], [im0.shape[:2]])[0]
        stem = Path(p).stem + ("" if mode == "image" else f"_{frame}")
        out = Path(save_dir) / "heatmaps"
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{stem}.npy", heat)
        if not cv2.imwrite(str(out / f"{stem}.jpg"), draw_detections(blend(heat, im0), det, self.names)):
            LOGGER.warning(f"WARNING: could not write {out / stem}.jpg")
        return heat
