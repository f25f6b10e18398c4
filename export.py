"""Export a YOLOv5 model to TorchScript and ONNX, writing the files next to the weights.

Usage:
    python export.py --weights yolov5n.pt --include torchscript onnx --img 640 640 --batch-size 1
    python export.py --weights yolov5n.pt --include onnx --dynamic --opset 17
    python export.py --cfg yolov5n_SE.yaml --include onnx     # this project's extra: a random-init model from a yaml

Format       --include     file
TorchScript  torchscript   yolov5n.torchscript (with a config.txt extra file: shape, stride, names as JSON)
ONNX         onnx          yolov5n.onnx (input `images`, output `output`, metadata `stride` and `names`)

With --cfg the files are named after the yaml and written to the current folder.
"""
import argparse
import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.experimental import attempt_load  # noqa: E402
from models.yolo import Detect, Model  # noqa: E402
from utils.general import LOGGER, check_img_size, colorstr, file_size, print_args  # noqa: E402
from utils.torch_utils import select_device  # noqa: E402

FORMATS = ("torchscript", "onnx")  # export order
V61_ONLY_FORMATS = ("openvino", "engine", "coreml", "saved_model", "pb", "tflite", "edgetpu", "tfjs")


def check_formats(include):
    """Lower-cased --include values; ValueError for formats this project does not write."""
    include = [str(x).lower() for x in include]
    unknown = [x for x in include if x not in FORMATS]
    if unknown:
        v61 = [x for x in unknown if x in V61_ONLY_FORMATS]
        hint = f" ({', '.join(v61)}: YOLOv5 v6.1 formats this project does not export)" if v61 else ""
        raise ValueError(f"export.py: invalid --include {unknown}{hint}; valid --include arguments are {list(FORMATS)}")
    return include


def check_export_size(imgsz):
    """--img as [h, w]; one value means a square image."""
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if len(imgsz) not in (1, 2) or any(x < 1 for x in imgsz):
        raise ValueError(f"export.py: --img takes one or two positive sizes (h w), got {imgsz}")
    return imgsz * 2 if len(imgsz) == 1 else imgsz


@contextmanager
def quiet_tracing():
    """Silence the tracer's shape-to-constant warnings and the deprecation notices of the tracing exporters."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        yield


def detect_head(model):
    """The model's Detect layer."""
    heads = [m for m in model.modules() if isinstance(m, Detect)]
    if not heads:
        raise ValueError("export.py: the model has no Detect layer to export")
    return heads[-1]


def export_metadata(model):
    """The facts a runtime needs besides the graph: the largest stride and the class names."""
    return {"stride": int(max(model.stride)), "names": list(model.names)}


def export_torchscript(model, im, file, prefix=colorstr("TorchScript:")):
    """Trace the model and save it with a config.txt extra file holding shape, stride and names as JSON."""
    LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
    f = file.with_suffix(".torchscript")
    with quiet_tracing():
        ts = torch.jit.trace(model, im, strict=False)
    meta = {"shape": list(im.shape), **export_metadata(model)}
    ts.save(str(f), _extra_files={"config.txt": json.dumps(meta)})
    return f


class DecodedOutput(nn.Module):
    """The model, reduced in eval mode to its decoded (bs, N, no) tensor so the ONNX graph has one output."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x):
        y = self.model(x)
        return y if self.training else y[0]


def onnx_output_names(model, train):
    """`output` (eval: decoded boxes); in training mode one raw map per level: output, output1, output2, ..."""
    return ["output"] + ([f"output{i}" for i in range(1, detect_head(model).nl)] if train else [])


def onnx_dynamic_axes(outputs, train):
    """Batch, height and width of `images` vary; outputs vary in batch and anchors (eval) or grid size (train)."""
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    for name in outputs:
        axes[name] = {0: "batch", 2: "y", 3: "x"} if train else {0: "batch", 1: "anchors"}
    return axes


def export_onnx(model, im, file, opset=17, train=False, dynamic=False, prefix=colorstr("ONNX:")):
    """Export with the TorchScript-based exporter, check the graph, store stride and names as metadata."""
    LOGGER.info(f"\n{prefix} starting export with onnx {onnx.__version__}...")
    f = file.with_suffix(".onnx")
    outputs = onnx_output_names(model, train)
    with quiet_tracing():
        torch.onnx.export(
            DecodedOutput(model), (im,), str(f), dynamo=False, opset_version=opset, input_names=["images"],
            output_names=outputs, dynamic_axes=onnx_dynamic_axes(outputs, train) if dynamic else None,
            training=torch.onnx.TrainingMode.TRAINING if train else torch.onnx.TrainingMode.EVAL,
            do_constant_folding=not train,
        )
    model_onnx = onnx.load(str(f))
    onnx.checker.check_model(model_onnx)
    for k, v in export_metadata(model).items():
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = k, json.dumps(v)
    onnx.save(model_onnx, str(f))
    return f


def timed_export(prefix, export_fn):
    """Run one exporter; log its time and file size, or its failure (other formats still run, as in v6.1)."""
    t = time.time()
    try:
        f = export_fn(prefix=prefix)
    except Exception as e:  # any exporter error: report it and go on with the next format
        LOGGER.info(f"{prefix} export failure: {type(e).__name__}: {e}")
        return None
    LOGGER.info(f"{prefix} export success ({time.time() - t:.1f}s), saved as {f} ({file_size(f):.1f} MB)")
    return f


def load_export_model(weights, cfg, device):
    """A fused float32 model and the path the exported files are named after."""
    if bool(weights) == bool(cfg):
        raise ValueError("export.py: pass exactly one of --weights W.pt or --cfg model.yaml")
    if cfg:
        model = Model(cfg).to(device).fuse()
        return model, Path.cwd() / f"{Path(cfg).stem}.pt"
    return attempt_load(weights, map_location=device, inplace=True, fuse=True), Path(weights)


def check_names(model, source):
    """The class names must match the Detect layer's class count."""
    nc = detect_head(model).nc
    if len(model.names) != nc:
        raise ValueError(f"{source}: model has {nc} classes but {len(model.names)} names {model.names}")


def prepare_for_export(model, train, inplace, dynamic):
    """Set train/eval mode and the Detect flags the exported graph depends on."""
    model.train(train)
    head = detect_head(model)
    head.inplace, head.onnx_dynamic = inplace, dynamic
    return model


@torch.no_grad()
def run(weights=None, cfg="", imgsz=(640, 640), batch_size=1, device="cpu", include=FORMATS, half=False,
        inplace=False, train=False, dynamic=False, opset=17):
    """Export --weights (or a random-init --cfg model) to the --include formats; returns the files written."""
    t = time.time()
    include = check_formats(include)
    imgsz = check_export_size(imgsz)
    if batch_size < 1:
        raise ValueError(f"export.py: --batch-size must be >= 1, got {batch_size}")
    device = select_device(device)
    if half and device.type == "cpu":
        raise ValueError("export.py: --half only compatible with GPU export, i.e. use --device 0")
    model, file = load_export_model(weights, cfg, device)
    check_names(model, cfg or weights)
    imgsz = check_img_size(imgsz, s=int(max(model.stride)))
    im = torch.zeros(batch_size, 3, *imgsz, device=device)
    if half:
        im, model = im.half(), model.half()
    model = prepare_for_export(model, train, inplace, dynamic)
    for _ in range(2):  # dry runs build Detect's grids for this input size
        y = model(im)
    source = f"{cfg} (random init)" if cfg else f"{file} ({file_size(file):.1f} MB)"
    LOGGER.info(f"\n{colorstr('PyTorch:')} starting from {source} with output shape {tuple(y[0].shape)}")
    exporters = {
        "torchscript": lambda prefix: export_torchscript(model, im, file, prefix=prefix),
        "onnx": lambda prefix: export_onnx(model, im, file, opset, train, dynamic, prefix=prefix),
    }
    prefixes = {"torchscript": colorstr("TorchScript:"), "onnx": colorstr("ONNX:")}
    files = [timed_export(prefixes[fmt], exporters[fmt]) for fmt in FORMATS if fmt in include]
    files = [f for f in files if f]
    LOGGER.info(f"\nExport complete ({time.time() - t:.2f}s)"
                f"\nResults saved to {colorstr('bold', file.parent.resolve())}"
                f"\nVisualize with https://netron.app")
    return files


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description="Export a YOLOv5 model to TorchScript and ONNX")
    parser.add_argument("--weights", type=str, default=None, help="model.pt path")
    parser.add_argument("--cfg", type=str, default="", help="model.yaml: random-init model instead of --weights")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size")
    parser.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--half", action="store_true", help="FP16 half-precision export (CUDA only)")
    parser.add_argument("--inplace", action="store_true", help="set YOLOv5 Detect() inplace=True")
    parser.add_argument("--train", action="store_true", help="model.train() mode: export the raw per-level maps")
    parser.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    parser.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    parser.add_argument("--include", nargs="+", default=list(FORMATS), help=f"formats: {', '.join(FORMATS)}")
    opt = parser.parse_args(argv)
    print_args(Path(__file__).stem, opt)
    return opt


def main(opt):
    """Run the export; exit status 1 when a requested format was not written."""
    files = run(**vars(opt))
    return 0 if len(files) == len(set(check_formats(opt.include))) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(parse_opt()))
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
