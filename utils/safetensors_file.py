"""YOLOv5 weights as .safetensors: tensors and a string map, nothing that can run code when read.

The file holds the model's state_dict (FP16 by default, FP32 on request) and, as string metadata, what rebuilding
the model needs: `format` ("yolov5"), `format_version`, `yaml` (the model yaml as JSON), `names` (JSON list), `nc`,
`stride` (JSON list), and the v6.1 checkpoint fields a stripped checkpoint keeps (`epoch`, `best_fitness`, `date`,
and `git` when the checkpoint has it), each as JSON. Building the model from the yaml is the caller's part
(models.loading: utils imports nothing from models).
"""

import json
import reprlib

import torch

from utils.atomic import atomic_write

FORMAT, FORMAT_VERSION = "yolov5", "1"
SUFFIX = ".safetensors"
CHECKPOINT_FIELDS = ("epoch", "best_fitness", "date", "git")


def is_safetensors(weights):
    """True for a path ending in .safetensors (any case)."""
    return str(weights).lower().endswith(SUFFIX)


def _plain(x):
    """JSON-ready: numpy/torch scalars to Python numbers, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if hasattr(x, "item") else x


def safetensors_metadata(model, ckpt=None):
    """The string map stored beside the tensors (see the module docstring)."""
    names = model.names.values() if isinstance(model.names, dict) else model.names
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "yaml": json.dumps(_plain(model.yaml)),
        "names": json.dumps([str(n) for n in names]),
        "nc": str(int(model.model[-1].nc)),
        "stride": json.dumps(_plain(model.stride.tolist())),
    }
    for k in CHECKPOINT_FIELDS:
        if (ckpt or {}).get(k) is not None:
            meta[k] = json.dumps(_plain(ckpt[k]))
    return meta


def save_safetensors(model, path, ckpt=None, float32=False):
    """Write model's state_dict (FP16, or FP32 with float32) and its metadata to path, atomically."""
    from safetensors.torch import save

    dtype = torch.float32 if float32 else torch.float16
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
    }
    data = save(tensors, metadata=safetensors_metadata(model, ckpt))
    atomic_write(path, lambda f: f.write(data))
    return path


def read_safetensors(path):
    """(state_dict on CPU, {'yaml', 'names', 'nc', 'stride'}, v6.1 checkpoint fields); one-line ValueError for a
    file that is not a readable YOLOv5 .safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {reason}") from None
    if raw.get("format") != FORMAT:
        got = "missing" if raw.get("format") is None else repr(raw["format"])
        raise ValueError(
            f"{path}: not a YOLOv5 .safetensors: metadata 'format' is {got}, expected '{FORMAT}' "
            f"(the model yaml, names and stride are needed: write the file with export.py --include safetensors)"
        )
    meta = {k: _parse(path, raw, k) for k in ("yaml", "names", "nc", "stride")}
    _check_types(path, meta)
    fields = {k: _parse(path, raw, k) for k in CHECKPOINT_FIELDS if k in raw}
    return tensors, meta, fields


def _parse(path, raw, key):
    if key not in raw:
        raise ValueError(f"{path}: metadata '{key}' is missing (write the file with export.py --include safetensors)")
    try:
        return json.loads(raw[key])
    except ValueError as e:
        raise ValueError(f"{path}: metadata '{key}' is not valid JSON: {e}") from None


def _check_types(path, meta):
    nc, names, stride = meta["nc"], meta["names"], meta["stride"]
    checks = (
        ("yaml", isinstance(meta["yaml"], dict), "a model yaml mapping"),
        ("nc", isinstance(nc, int) and not isinstance(nc, bool) and nc > 0, "a positive int"),
        ("names", isinstance(names, list) and all(isinstance(n, str) for n in names), "a list of strings"),
        ("stride", isinstance(stride, list) and all(isinstance(s, (int, float)) for s in stride), "a list of numbers"),
    )
    for key, ok, expected in checks:
        if not ok:
            raise ValueError(f"{path}: metadata '{key}' must be {expected}, got {reprlib.repr(meta[key])}")
    if len(names) != nc:
        raise ValueError(f"{path}: metadata has {len(names)} names for nc={nc}")
