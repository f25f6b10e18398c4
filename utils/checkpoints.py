"""Checkpoint I/O that never runs code from the file: a restricted unpickler and atomic saving."""
import importlib
import os
import pickle
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn as nn

_TORCH_REBUILDERS = {
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy", "_rebuild_from_type_v2",
}
_PLAIN = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("__builtin__", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("torch", "Size"), ("torch", "device"), ("torch.storage", "UntypedStorage"),
    ("builtins", "range"), ("__builtin__", "xrange"),  # v6.1's Sum keeps a range
    ("torch.storage", "TypedStorage"), ("torch.storage", "_load_from_bytes"),
    ("_codecs", "encode"),  # bytes of numpy scalars (e.g. an np.float64 lr in optimizer state) under protocol 2
}
_NUMPY = {"_reconstruct", "scalar", "ndarray", "dtype"}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asked to import something a YOLOv5 checkpoint never holds."""


def _is_safe_global(module, name):
    """True for what a YOLOv5 checkpoint can legitimately reference."""
    if (module, name) in _PLAIN:
        return True
    if module == "torch._utils":
        return name in _TORCH_REBUILDERS
    if module == "torch":
        return name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)
    if module.split(".")[0] == "numpy":
        return module.endswith(("multiarray", "numpy")) and name in _NUMPY or module == "numpy.dtypes"
    if module.startswith("torch.nn.modules.") or module.split(".")[0] == "models":
        return _is_module_class(module, name)
    return False


def _is_module_class(module, name):
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, nn.Module)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only allow-listed globals (model classes, tensors, containers)."""

    def find_class(self, module, name):
        if not _is_safe_global(module, name):
            raise UnsafeCheckpointError(f"global '{module}.{name}' is not allowed in a checkpoint")
        return super().find_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


restricted_pickle = types.ModuleType("restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.__name__ = "restricted_pickle"


def load_checkpoint(weights, map_location="cpu"):
    """Load a YOLOv5 .pt safely; clear errors for missing, corrupt, hostile or non-checkpoint files."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights '{weights}' not found (nothing is downloaded: pass a local .pt)")
    _ensure_importable()
    try:
        ckpt = torch.load(path, map_location=map_location, pickle_module=restricted_pickle, weights_only=False)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{weights}: refused: {e}; this file could run code, it was not loaded") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError, AttributeError) as e:
        raise ValueError(f"{weights}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    if isinstance(ckpt, nn.Module):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), nn.Module):
        raise ValueError(f"{weights}: not a YOLOv5 checkpoint: expected a dict holding a 'model' or 'ema' nn.Module")
    return ckpt


def _ensure_importable():
    """Checkpoints reference `models.*`: make the project root importable wherever the caller runs."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)


def save_checkpoint(ckpt, path):
    """torch.save to a temp file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
