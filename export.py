"""Export a YOLOv5 model to SafeTensors, TorchScript, ONNX and OpenVINO, writing the files next to the weights.

Usage:
    python export.py --weights yolov5s.pt --include torchscript onnx openvino --img 640 640 --batch-size 1
    python export.py --weights yolov5n.pt --include onnx --dynamic --simplify --opset 12
    python export.py --weights best.pt --include openvino --int8 --data data.yaml   # INT8, calibrated on train images
    python export.py --cfg yolov5n_SE.yaml --include onnx     # this project's extra: a random-init model from a yaml
    python export.py --weights best.pt --include safetensors  # pickle-free weights (FP16; --float32 for FP32)

Format       --include     file                      runs with
PyTorch      -             yolov5s.pt                torch
SafeTensors  safetensors   yolov5s.safetensors       torch (FP16 state_dict; model yaml, names, stride as metadata)
TorchScript  torchscript   yolov5s.torchscript       torch (config.txt extra file: shape, stride, names as JSON)
ONNX         onnx          yolov5s.onnx              onnxruntime (input `images`, output `output`; stride, names)
OpenVINO     openvino      yolov5s_openvino_model/   openvino (yolov5s.xml/.bin and metadata.yaml: stride, names)
                           yolov5s_int8_openvino_model/ with --int8 (nncf post-training quantization)

CoreML       coreml        yolov5s.mlmodel           Apple devices only (image input `image`; stride, names in metadata)

The other v6.1 formats (engine, saved_model, pb, tflite, edgetpu, tfjs) are refused with the reason.
Every exported file but CoreML runs in detect.py, val.py and the Python API: python detect.py --weights yolov5s.onnx
With --cfg the files are named after the yaml and written to the current folder.
"""

import argparse
import json
import pickle
import sys
import time
import warnings
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
import yaml

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.loading import load_checkpoint, ready_model
from models.registry import required_opset
from models.yolo import Detect, Model
from utils.downloads import attempt_download, check_dataset
from utils.general import LOGGER, check_img_size, colorstr, file_size, print_args
from utils.safetensors_file import save_safetensors
from utils.sources import LoadImages
from utils.torch_utils import select_device

FORMATS = ("safetensors", "torchscript", "onnx", "openvino", "coreml")  # export order
REFUSED = {
    "engine": "TensorRT needs an NVIDIA GPU with the tensorrt package",
    "saved_model": "TensorFlow formats are not supported (TensorFlow is not a dependency)",
    "pb": "TensorFlow formats are not supported (TensorFlow is not a dependency)",
    "tflite": "TensorFlow formats are not supported (TensorFlow is not a dependency)",
    "edgetpu": "Edge TPU needs TFLite and the Linux edgetpu_compiler",
    "tfjs": "TensorFlow.js needs TensorFlow (not a dependency)",
}


def check_formats(include):
    """Lower-cased --include values; ValueError for formats this project does not write, with the reason."""
    include = [str(x).lower() for x in include]
    for x in include:
        if x in REFUSED:
            raise ValueError(f"export.py: --include {x} is not available: {REFUSED[x]}; use {', '.join(FORMATS)}")
        if x not in FORMATS:
            raise ValueError(f"export.py: invalid --include {x}; valid --include arguments are {list(FORMATS)}")
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


def export_safetensors(ckpt, file, float32=False, prefix=colorstr("SafeTensors:")):
    """The unfused state_dict (FP16, FP32 with --float32) with the metadata that rebuilds the model."""
    import safetensors

    LOGGER.info(f"\n{prefix} starting export with safetensors {safetensors.__version__}...")
    f = file.with_suffix(".safetensors")
    if f.resolve() == file.resolve():
        raise ValueError(f"{f} is the input file; copy it under another name to convert it")
    return save_safetensors(ckpt.get("ema") or ckpt["model"], f, ckpt, float32)


def export_torchscript(model, im, file, optimize=False, dynamic=False, prefix=colorstr("TorchScript:")):
    """Trace the model and save it with a config.txt extra file holding shape, stride and names as JSON."""
    LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
    f = file.with_suffix(".torchscript")
    with quiet_tracing():
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)
    meta = {"shape": list(im.shape), **export_metadata(model), **({"dynamic": True} if dynamic else {})}
    if optimize:  # saved as a regular TorchScript file so detect.py and val.py still load it
        from torch.utils.mobile_optimizer import optimize_for_mobile

        ts = optimize_for_mobile(ts)
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


def export_onnx(model, im, file, opset=12, train=False, dynamic=False, simplify=False, prefix=colorstr("ONNX:")):
    """Export with the TorchScript-based exporter, check (and simplify) the graph, store stride and names."""
    LOGGER.info(f"\n{prefix} starting export with onnx {onnx.__version__}...")
    opset = lowest_opset(model, opset, prefix)
    f = file.with_suffix(".onnx")
    outputs = onnx_output_names(model, train)
    with quiet_tracing():
        torch.onnx.export(
            DecodedOutput(model),
            (im,),
            str(f),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=onnx_dynamic_axes(outputs, train) if dynamic else None,
            training=torch.onnx.TrainingMode.TRAINING if train else torch.onnx.TrainingMode.EVAL,
            do_constant_folding=not train,
        )
    model_onnx = onnx.load(str(f))
    onnx.checker.check_model(model_onnx)
    if simplify:
        model_onnx = simplify_onnx(model_onnx, prefix)
    for k, v in export_metadata(model).items():
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = k, json.dumps(v)
    onnx.save(model_onnx, str(f))
    return f


def lowest_opset(model, opset, prefix):
    """`opset`, raised (with one line saying so) to the lowest opset the model's blocks need (grid_sample: 16)."""
    need, names = required_opset(model)
    if need <= opset:
        return opset
    LOGGER.info(f"{prefix} opset {opset} raised to {need}, the lowest that {', '.join(names)} needs")
    return need


def simplify_onnx(model_onnx, prefix):
    """Fold constants and fuse redundant nodes with onnxslim (pip install onnxslim)."""
    try:
        import onnxslim
    except ImportError:
        raise ImportError("--simplify needs onnxslim: pip install onnxslim") from None
    LOGGER.info(f"{prefix} simplifying with onnxslim {onnxslim.__version__}...")
    n = len(model_onnx.graph.node)
    model_onnx = onnxslim.slim(model_onnx)
    onnx.checker.check_model(model_onnx)
    LOGGER.info(f"{prefix} simplified from {n} to {len(model_onnx.graph.node)} nodes")
    return model_onnx


def export_openvino(file, metadata, half=False, int8_images=None, prefix=colorstr("OpenVINO:")):
    """Convert the exported ONNX file to OpenVINO IR (<stem>_openvino_model/<stem>.xml/.bin + metadata.yaml).

    With int8_images (calibration batches), weights and activations are quantized to INT8 by NNCF post-training
    quantization into <stem>_int8_openvino_model/."""
    try:
        import openvino as ov
    except ImportError:
        raise ImportError("--include openvino needs the openvino package: pip install openvino") from None
    LOGGER.info(f"\n{prefix} starting export with openvino {ov.__version__}...")
    d = file.parent / f"{file.stem}_{'int8_' if int8_images is not None else ''}openvino_model"
    ov_model = ov.convert_model(str(file.with_suffix(".onnx")))
    if int8_images is not None:
        ov_model = quantize_int8(ov_model, int8_images, prefix)
    d.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(d / f"{file.stem}.xml"), compress_to_fp16=half)
    with open(d / "metadata.yaml", "w") as f:
        yaml.safe_dump(metadata, f, sort_keys=False)
    return d


def quantize_int8(ov_model, images, prefix):
    """NNCF post-training INT8 quantization calibrated on images (a list of float32 NCHW arrays in 0..1)."""
    try:
        import nncf
    except ImportError:
        raise ImportError("--int8 needs the nncf package: pip install nncf") from None
    LOGGER.info(f"{prefix} quantizing to INT8 with nncf {nncf.__version__} on {len(images)} calibration images...")
    return nncf.quantize(ov_model, nncf.Dataset(images), preset=nncf.QuantizationPreset.MIXED, subset_size=len(images))


def calibration_images(data, imgsz, batch_size, n=300):
    """Up to n images of the --data train split (as v6.1's TFLite INT8), letterboxed, as float32 NCHW arrays."""
    train = check_dataset(data)["train"]
    images = []
    for v in train if isinstance(train, list) else [train]:
        for _, im, *_ in LoadImages(v, img_size=imgsz, auto=False):
            images.append((im[None].astype(np.float32) / 255).repeat(batch_size, 0))
            if len(images) == n:
                return images
    if not images:
        raise ValueError(f"export.py: --int8 found no calibration images in the train split of {data}")
    return images


def export_coreml(model, im, file, prefix=colorstr("CoreML:")):
    """Convert the traced model to a CoreML neural network (image input `image`, 0..255 RGB) as in v6.1."""
    try:
        import coremltools as ct
    except ImportError:
        raise ImportError("--include coreml needs the coremltools package: pip install coremltools") from None
    LOGGER.info(f"\n{prefix} starting export with coremltools {ct.__version__}...")
    f = file.with_suffix(".mlmodel")
    with quiet_tracing():
        ts = torch.jit.trace(DecodedOutput(model), im, strict=False, check_trace=False)
        warnings.filterwarnings("ignore", message="Output, .* has been renamed", category=UserWarning)
        ct_model = ct.convert(
            ts,
            inputs=[ct.ImageType("image", shape=im.shape, scale=1 / 255, bias=[0, 0, 0])],
            convert_to="neuralnetwork",
        )
    ct_model.user_defined_metadata.update({k: json.dumps(v) for k, v in export_metadata(model).items()})
    ct_model.save(str(f))
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


def load_export_model(weights, cfg, device, trust=False):
    """(fused float32 model, the checkpoint with the unfused model for --include safetensors, the path the exported
    files are named after)."""
    if weights and cfg:
        raise ValueError("export.py: pass exactly one of --weights W.pt or --cfg model.yaml")
    weights = weights or ("" if cfg else ROOT / "yolov5s.pt")  # v6.1's default weights
    if cfg:
        ckpt, file = {"model": Model(cfg).to(device)}, Path.cwd() / f"{Path(cfg).stem}.pt"
    else:
        weights = attempt_download(weights)
        ckpt, file = load_checkpoint(weights, map_location=device, trust=trust), Path(weights)
    return ready_model(deepcopy(ckpt.get("ema") or ckpt["model"]), inplace=True, fuse=True), ckpt, file


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


def has_xnnpack():
    """True when this torch build has XNNPACK, which the mobile optimizer needs."""
    import torch.backends.xnnpack

    return torch.backends.xnnpack.enabled


def check_options(include, imgsz, batch_size, device, half, optimize, train, int8=False, float32=False):
    """Validated formats, [h, w] and device; ValueError with one line for impossible combinations."""
    include = check_formats(include)
    if float32 and "safetensors" not in include:
        raise ValueError("export.py: --float32 sets the precision of the safetensors export: add --include safetensors")
    imgsz = check_export_size(imgsz)
    if batch_size < 1:
        raise ValueError(f"export.py: --batch-size must be >= 1, got {batch_size}")
    device = select_device(device)
    if half and device.type == "cpu":
        raise ValueError("export.py: --half only compatible with GPU export, i.e. use --device 0")
    if optimize and not has_xnnpack():
        raise ValueError("export.py: --optimize needs a torch build with XNNPACK (mobile optimizer); this one has none")
    if optimize and half:
        raise ValueError("export.py: --optimize is for CPU (mobile) models, it cannot be combined with --half")
    if int8 and "openvino" not in include:
        raise ValueError("export.py: --int8 quantizes the OpenVINO export: add --include openvino")
    if int8 and half:
        raise ValueError("export.py: pass one of --int8 and --half")
    if train and ("openvino" in include or "coreml" in include):
        raise ValueError("export.py: --train exports raw per-level maps: only torchscript and onnx take it")
    return include, imgsz, device


def closing_hints(files, t):
    """v6.1's closing lines: where the files are and how to run the last one."""
    f = files[-1]
    return (
        f"\nExport complete ({time.time() - t:.2f}s)"
        f"\nResults saved to {colorstr('bold', f.parent.resolve())}"
        f"\nDetect:          python detect.py --weights {f}"
        f"\nPyTorch Hub:     model = torch.hub.load('{ROOT}', 'custom', '{f}', source='local')"
        f"\nValidate:        python val.py --weights {f}"
        f"\nVisualize:       https://netron.app"
    )


@torch.no_grad()
def run(
    weights=None,
    cfg="",
    imgsz=(640, 640),
    batch_size=1,
    device="cpu",
    include=("torchscript", "onnx"),
    half=False,
    inplace=False,
    train=False,
    optimize=False,
    int8=False,
    dynamic=False,
    simplify=False,
    opset=12,
    data=ROOT / "data/coco128.yaml",
    float32=False,
    trust_weights=False,
):
    """Export --weights (or a random-init --cfg model) to the --include formats; returns the files written."""
    t = time.time()
    include, imgsz, device = check_options(include, imgsz, batch_size, device, half, optimize, train, int8, float32)
    model, ckpt, file = load_export_model(weights, cfg, device, trust_weights)
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
    int8_images = calibration_images(data, imgsz, batch_size) if int8 else None
    exporters = {
        "safetensors": lambda prefix: export_safetensors(ckpt, file, float32, prefix=prefix),
        "torchscript": lambda prefix: export_torchscript(model, im, file, optimize, dynamic, prefix=prefix),
        "onnx": lambda prefix: export_onnx(model, im, file, opset, train, dynamic, simplify, prefix=prefix),
        "openvino": lambda prefix: export_openvino(file, export_metadata(model), half, int8_images, prefix=prefix),
        "coreml": lambda prefix: export_coreml(model, im, file, prefix=prefix),
    }
    wanted = set(include) | ({"onnx"} if "openvino" in include else set())  # OpenVINO converts the ONNX file
    files = {fmt: timed_export(colorstr(f"{fmt_name(fmt)}:"), exporters[fmt]) for fmt in FORMATS if fmt in wanted}
    files = [f for fmt, f in files.items() if f and fmt in include]
    runnable = [f for f in files if f.suffix != ".mlmodel"]  # CoreML runs on Apple devices, not in detect.py here
    if runnable:
        LOGGER.info(closing_hints(runnable, t))
    return files


def fmt_name(fmt):
    """Display name of an --include value."""
    return {
        "safetensors": "SafeTensors",
        "torchscript": "TorchScript",
        "onnx": "ONNX",
        "openvino": "OpenVINO",
        "coreml": "CoreML",
    }[fmt]


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description="Export a YOLOv5 model to SafeTensors, TorchScript, ONNX and OpenVINO")
    parser.add_argument("--weights", type=str, default=None, help="model.pt path or a v6.1 name (default yolov5s.pt)")
    parser.add_argument("--cfg", type=str, default="", help="model.yaml: random-init model instead of --weights")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size")
    parser.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--half", action="store_true", help="FP16 half-precision export (CUDA only)")
    parser.add_argument("--inplace", action="store_true", help="set YOLOv5 Detect() inplace=True")
    parser.add_argument("--train", action="store_true", help="model.train() mode: export the raw per-level maps")
    parser.add_argument("--optimize", action="store_true", help="TorchScript: optimize for mobile")
    parser.add_argument("--int8", action="store_true", help="OpenVINO: INT8 quantization (nncf), calibrated on --data")
    parser.add_argument("--data", type=str, default=ROOT / "data/coco128.yaml", help="dataset.yaml: --int8 calibration")
    parser.add_argument("--dynamic", action="store_true", help="ONNX/TorchScript/OpenVINO: dynamic batch and size")
    parser.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph with onnxslim")
    parser.add_argument("--opset", type=int, default=12, help="ONNX: opset version")
    parser.add_argument("--float32", action="store_true", help="SafeTensors: FP32 tensors (default FP16)")
    parser.add_argument("--trust-weights", action="store_true", help="load a .pt even on a torch below 2.10 (CVEs)")
    parser.add_argument("--include", nargs="+", default=["torchscript", "onnx"], help=f"formats: {', '.join(FORMATS)}")
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
    except (FileNotFoundError, ValueError, ConnectionError, pickle.UnpicklingError) as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
