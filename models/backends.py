"""One inference interface over every format export.py writes: .pt, .safetensors, TorchScript, ONNX and OpenVINO."""

import ast
import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

from models.loading import attempt_load
from utils.downloads import attempt_download
from utils.general import LOGGER
from utils.torch_utils import channels_last, cpu_has_bf16

FORMATS = {  # name: (export.py --include, file suffix, runtime package)
    "PyTorch": ("-", ".pt", "torch"),
    "SafeTensors": ("safetensors", ".safetensors", "safetensors"),
    "TorchScript": ("torchscript", ".torchscript", "torch"),
    "ONNX": ("onnx", ".onnx", "onnxruntime"),
    "OpenVINO": ("openvino", "_openvino_model", "openvino"),
}
REFUSED = {  # v6.1 formats this project neither writes nor runs, and why
    ".engine": "TensorRT needs an NVIDIA GPU and the tensorrt package",
    ".mlmodel": "CoreML models run on Apple devices (coremltools cannot run predictions elsewhere)",
    ".mlpackage": "CoreML models run on Apple devices (coremltools cannot run predictions elsewhere)",
    "_saved_model": "TensorFlow SavedModel is not supported (TensorFlow is not a dependency)",
    ".pb": "TensorFlow GraphDef is not supported (TensorFlow is not a dependency)",
    ".tflite": "TFLite is not supported (TensorFlow is not a dependency)",
    "_web_model": "TF.js models run in a browser, not here",
}
OPENVINO_META = "metadata.yaml"  # stride and names, beside the .xml
TORCH_FORMATS = ("PyTorch", "SafeTensors")  # a models.yolo.Model in torch: ensembles, --augment, --visualize


class BackendError(ValueError):
    """A model file that cannot be run: unknown format, corrupt file, missing runtime package."""


def model_format(w):
    """'PyTorch', 'TorchScript', 'ONNX' or 'OpenVINO' from the file name; BackendError for anything else."""
    p = Path(str(w).rstrip("/"))
    if p.suffix == ".xml" or p.name.endswith("_openvino_model"):
        return "OpenVINO"
    if p.suffix.lower() == ".pth":
        return "PyTorch"
    for name, (_, suffix, _) in FORMATS.items():
        if p.name.lower().endswith(suffix):
            return name
    for suffix, why in REFUSED.items():
        if p.name.endswith(suffix):
            raise BackendError(f"{w}: {why}; export to one of {supported_suffixes()} instead")
    raise BackendError(f"{w}: unknown model format '{p.suffix or p.name}'; expected one of {supported_suffixes()}")


def supported_suffixes():
    """The model file endings the backend runs, for error messages."""
    return ", ".join(s for _, s, _ in FORMATS.values())


def require(package, w):
    """Import a runtime package, or a BackendError telling which pip package to install."""
    try:
        return __import__(package)
    except ImportError:
        raise BackendError(f"{w}: running this format needs the '{package}' package: pip install {package}") from None


def parse_meta_value(v):
    """A metadata value written as JSON (this project) or as a Python literal (YOLOv5 v6.1's str(dict))."""
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return ast.literal_eval(v)


def clean_names(names, nc, data):
    """Class names as a list: the file's own, else the --data yaml's, else class0, class1, ..."""
    names = names or names_from_data(data)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return list(names) if names else [f"class{i}" for i in range(nc or 1000)]


def names_from_data(data):
    """The `names` of a dataset yaml (a dict or a file); a missing file or one without names warns and gives None."""
    if not data:
        return None
    if not isinstance(data, dict):
        if not Path(data).is_file():
            LOGGER.warning(f"WARNING: --data {data} not found: using class0, class1, ...")
            return None
        with open(data, errors="ignore") as f:
            data = yaml.safe_load(f) or {}
    if not data.get("names"):
        LOGGER.warning("WARNING: the --data yaml has no 'names': using class0, class1, ...")
    return data.get("names")


class DetectMultiBackend(nn.Module):
    """A YOLOv5 detector from a .pt, .safetensors, .torchscript, .onnx or *_openvino_model/ file, called like the
    PyTorch Model."""

    def __init__(
        self, weights="yolov5s.pt", device=torch.device("cpu"), data=None, fp16=False, threads=None, trust=False
    ):
        """threads: CPU threads of ONNX Runtime / OpenVINO (None: the runtime's default; torch's is global).
        trust: load a pickled .pt even on a torch with weights-only advisories (utils.checkpoints.SAFE_TORCH)."""
        super().__init__()
        w = weights[0] if isinstance(weights, (list, tuple)) and len(weights) == 1 else weights
        if isinstance(w, (list, tuple)) and any(model_format(x) not in TORCH_FORMATS for x in w):
            raise BackendError(
                f"an ensemble of several --weights takes .pt/.safetensors files only, got {list(map(str, w))}"
            )
        self.format = "PyTorch" if isinstance(w, (list, tuple)) else model_format(w)
        self.device = torch.device(device)
        self.pt, self.jit = self.format in TORCH_FORMATS, self.format == "TorchScript"
        self.bf16 = _cpu_half(fp16, self.device, self.format)
        self.fp16 = fp16 and self.device.type != "cpu"
        self.onnx, self.xml = self.format == "ONNX", self.format == "OpenVINO"
        load_pt = partial(_load_pt, trust=trust)
        loader = {"PyTorch": load_pt, "SafeTensors": load_pt, "TorchScript": _load_torchscript, "ONNX": _load_onnx}
        loader["OpenVINO"] = _load_openvino
        runner, meta = loader[self.format](w, self.device, self.fp16, threads)
        self.model = runner if isinstance(runner, nn.Module) else None  # the torch module (.pt, TorchScript)
        self.runner = None if self.model is not None else runner  # numpy in, numpy out (ONNX, OpenVINO)
        self.stride = max(int(meta.get("stride", 32)), 32)
        self.input_shape = meta.get("shape")  # the fixed (b, c, h, w) of a static export, None when free
        self.dynamic = self.input_shape is None
        self.names = clean_names(meta.get("names"), meta.get("nc"), data)
        self.weights = w

    def forward(self, im, augment=False, visualize=False):
        """(decoded predictions (b, n, 5 + nc), raw maps or None), like Model.forward in eval mode."""
        if self.pt:
            kwargs = {k: v for k, v in (("augment", augment), ("visualize", visualize)) if v}
            with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
                return self.model(im.half() if self.fp16 else im, **kwargs)
        if augment or visualize:
            raise BackendError(f"{self.weights}: --augment and --visualize need the PyTorch .pt model")
        self._check_shape(im)
        if self.jit:
            return self.model(im.half() if self.fp16 else im)[0], None
        return torch.from_numpy(np.ascontiguousarray(self.runner(im.cpu().numpy()))).to(im.device).float(), None

    def _check_shape(self, im):
        if self.input_shape and list(im.shape) != list(self.input_shape):
            h, w = self.input_shape[2:]
            raise BackendError(
                f"{self.weights} was exported for input {tuple(self.input_shape)}, got "
                f"{tuple(im.shape)}: pass --img {h} {w} (and batch {self.input_shape[0]}) "
                f"or export with --dynamic"
            )

    def warmup(self, imgsz=(1, 3, 640, 640)):
        """One forward on zeros (CUDA kernels, runtime graph compilation) before timing."""
        shape = list(self.input_shape or imgsz)
        self.forward(torch.zeros(*shape, device=self.device, dtype=torch.half if self.fp16 and self.pt else None))


def _cpu_half(half, device, fmt):
    """--half on CPU: bfloat16 autocast for .pt models (True), with what it does and costs said once."""
    if not half or device.type != "cpu":
        return False
    if fmt not in TORCH_FORMATS:
        LOGGER.warning(f"WARNING: --half on CPU applies to .pt models only (bfloat16 autocast); {fmt} runs float32")
        return False
    native = "" if cpu_has_bf16() else " (this CPU has no native bfloat16: emulated, slower than float32)"
    LOGGER.info(f"--half on CPU: bfloat16 autocast, head and box decoding in float32; mAP may differ slightly{native}")
    return True


def _load_pt(w, device, fp16, threads, trust=False):
    w = [attempt_download(x) for x in w] if isinstance(w, (list, tuple)) else attempt_download(w)
    model = channels_last(attempt_load(w, map_location=device, trust=trust))  # NHWC convs: faster oneDNN kernels on CPU
    model.half() if fp16 else model.float()
    names = getattr(model.module if hasattr(model, "module") else model, "names", None)
    nc = model.model[-1].nc if hasattr(model, "model") else None
    return model, {"stride": int(model.stride.max()), "names": names, "nc": nc}


def _missing(w):
    if not Path(w).exists():
        raise FileNotFoundError(f"{w} not found")
    return str(w)


def _load_torchscript(w, device, fp16, threads):
    LOGGER.info(f"Loading {w} for TorchScript inference...")
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(_missing(w), _extra_files=extra, map_location=device)
    except RuntimeError as e:
        raise BackendError(f"{w}: not a readable TorchScript file: {str(e).splitlines()[0]}") from None
    meta = json.loads(extra["config.txt"]) if extra["config.txt"] else {}
    meta["shape"] = None if meta.get("dynamic") else meta.get("shape")
    return (model.half() if fp16 else model.float()).eval(), meta


def _load_onnx(w, device, fp16, threads):
    LOGGER.info(f"Loading {w} for ONNX Runtime inference...")
    ort = require("onnxruntime", w)
    cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(_missing(w), sess_options=_ort_options(ort, threads), providers=providers)
    except (
        ort.capi.onnxruntime_pybind11_state.Fail,
        ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
        ort.capi.onnxruntime_pybind11_state.InvalidGraph,
    ) as e:
        raise BackendError(f"{w}: not a readable ONNX model: {str(e).splitlines()[0]}") from None
    meta = {k: parse_meta_value(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    inp = session.get_inputs()[0]
    meta["shape"] = inp.shape if all(isinstance(d, int) for d in inp.shape) else None
    dtype = np.float16 if "float16" in inp.type else np.float32
    out = session.get_outputs()[0]
    meta.setdefault("nc", out.shape[-1] - 5 if isinstance(out.shape[-1], int) else None)
    out = out.name
    return lambda x: session.run([out], {inp.name: x.astype(dtype)})[0], meta


def _ort_options(ort, threads):
    """Session options: a fixed thread count without spin-waiting (idle threads would steal shared cores)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _openvino_files(w):
    """(model.xml, metadata.yaml) from a *_openvino_model/ folder or its .xml file."""
    p = Path(w)
    xml = p if p.suffix == ".xml" else next(p.glob("*.xml"), None) if p.is_dir() else None
    if xml is None or not xml.is_file():
        raise FileNotFoundError(f"{w}: no OpenVINO model (.xml and .bin) found")
    return xml, xml.parent / OPENVINO_META


def _load_openvino(w, device, fp16, threads):
    LOGGER.info(f"Loading {w} for OpenVINO inference...")
    ov = require("openvino", w)
    xml, meta_file = _openvino_files(w)
    try:
        model = ov.Core().read_model(str(xml))
    except RuntimeError as e:
        raise BackendError(f"{xml}: not a readable OpenVINO model: {str(e).splitlines()[0]}") from None
    meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
    shape, no = model.inputs[0].get_partial_shape(), model.outputs[0].get_partial_shape()[-1]
    meta.setdefault("nc", no.get_length() - 5 if no.is_static else None)
    meta["shape"] = None if shape.is_dynamic else [d.get_length() for d in shape]
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = ov.Core().compile_model(model, "CPU", config)  # f32: not bf16 on AMX CPUs
    return lambda x: compiled(x)[compiled.output(0)], meta
