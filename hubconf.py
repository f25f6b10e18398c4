"""PyTorch Hub entry points, as in YOLOv5 v6.1.

Usage:
    import torch
    model = torch.hub.load('path/to/this/repo', 'yolov5s', source='local')          # official v6.1 weights
    model = torch.hub.load('path/to/this/repo', 'custom', path='best.pt', source='local')  # or .safetensors, .onnx
    model = torch.hub.load('path/to/this/repo', 'yolov5s_SOCA', pretrained=False, classes=3, source='local')
    results = model(['data/images/zidane.jpg', 'https://ultralytics.com/images/bus.jpg'], size=640)
    results.print()
"""

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.autoshape import AutoShape
from models.backends import DetectMultiBackend
from models.loading import load_checkpoint
from models.variants import variant_entries
from models.yolo import Model
from utils.downloads import attempt_download
from utils.general import LOGGER
from utils.torch_utils import select_device
from utils.transfer import log_transfer, transfer_weights

dependencies = ["torch", "yaml", "cv2", "PIL", "numpy"]  # what torch.hub checks before loading
SIZES = "nsmlx"
VARIANTS = [e.name for e in variant_entries()]  # the registry is the list


def _pretrained_into(model, weights, classes, trust=False):
    """Transfer every matching tensor of a v6.1 checkpoint into model by structure (variants included)."""
    ckpt = load_checkpoint(attempt_download(weights), trust=trust)
    src = (ckpt.get("ema") or ckpt["model"]).float()
    csd, n, total, new = transfer_weights(src, model, exclude=["anchors"])
    model.load_state_dict(csd, strict=False)
    log_transfer(n, total, new, weights)
    if len(src.names) == classes:
        model.names = list(src.names)
    return model


def _create(name, pretrained=True, channels=3, classes=80, autoshape=True, verbose=True, device=None, trust=False):
    """A YOLOv5 model by name (yolov5s, yolov5s_SOCA, ...) or by file (custom), wrapped in AutoShape.

    trust: load a pickled .pt even on a torch below 2.10, whose weights-only loader has advisories (CVEs)."""
    if not verbose:
        LOGGER.setLevel(logging.WARNING)
    device = select_device("" if device is None else device)
    path = Path(name)
    path = (
        path.with_suffix(".pt") if not path.suffix and not path.is_dir() and not str(name).startswith("http") else path
    )
    variant = "_" in path.stem and path.stem.split("_", 1)[1] in VARIANTS and not path.is_file()
    if pretrained and channels == 3 and classes == 80 and not variant:
        model = DetectMultiBackend(name if str(name).startswith("http") else path, device=device, trust=trust)
    else:
        model = Model(f"{path.stem}.yaml", ch=channels, nc=classes)
        if pretrained:
            _pretrained_into(model, f"{path.stem.split('_')[0]}.pt", classes, trust)
    model = AutoShape(model) if autoshape else model
    return model.to(device)


def custom(path="path/to/model.pt", autoshape=True, verbose=True, device=None, trust=False):
    """A model from a local or http(s) file: .pt, .safetensors, .torchscript, .onnx or *_openvino_model/."""
    return _create(path, autoshape=autoshape, verbose=verbose, device=device, trust=trust)


def _entry_point(name):
    def create(pretrained=True, channels=3, classes=80, autoshape=True, verbose=True, device=None, trust=False):
        return _create(name, pretrained, channels, classes, autoshape, verbose, device, trust)

    base = name.split("_")[0]
    kind = f"the {name.split('_', 1)[1]} attention variant of {base}" if "_" in name else f"the v6.1 {base}"
    create.__name__ = name
    create.__doc__ = f"{name}: {kind} model (pretrained: the v6.1 {base}.pt weights, transferred by structure)"
    return create


for _name in [f"yolov5{s}{p}" for p in ("", "6") for s in SIZES] + [f"yolov5{s}_{v}" for v in VARIANTS for s in SIZES]:
    globals()[_name] = _entry_point(_name)
