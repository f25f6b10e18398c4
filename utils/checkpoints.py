"""Checkpoint I/O that never runs code from the file: torch's weights-only unpickler and atomic saving.

A YOLOv5 checkpoint pickles whole nn.Module objects, so `torch.load(weights_only=True)` needs the module classes
on its allow-list. They are named through `torch.serialization.safe_globals`, built at load time from the classes
reachable in the imported `models.*` modules, the `torch.nn` layer classes and the numpy scalar types that torch
documents. Each class is named through a guard: torch's unpickler calls an allow-listed global on REDUCE, and a
module's `__init__` must never run with arguments taken from the file (e.g. `Model(cfg=...)`).
"""

import importlib
import os
import pickle
import pkgutil
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

_BUILD_ONLY = "\n"  # no GLOBAL opcode can name a key holding a newline: classes under it are reachable only by BUILD


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint that asks for something a YOLOv5 checkpoint never holds; nothing from it was run."""


def _guard(cls):
    """A stand-in for cls: NEWOBJ (how torch.save pickles a module) makes a bare instance; calls with arguments fail."""

    def new(_, *args, **kwargs):
        if args or kwargs:
            raise UnsafeCheckpointError(f"{cls.__module__}.{cls.__qualname__} called with arguments from the file")
        return cls.__new__(cls)

    return type(f"{cls.__name__}Guard", (), {"__new__": new})


def _project_module_classes():
    """{'models.x.Name': class} for every nn.Module class reachable by name in an imported models.* module."""
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.append(str(root))
    import models

    for info in pkgutil.walk_packages(models.__path__, "models."):
        importlib.import_module(info.name)
    mods = {n: m for n, m in list(sys.modules.items()) if m is not None and (n == "models" or n.startswith("models."))}
    found = {f"{n}.{k}": v for n, m in mods.items() for k, v in vars(m).items() if _is_module_class(v)}
    names = {k.rsplit(".", 1)[1] for k in found}
    for n, m in mods.items():  # lazy re-exports through a module __getattr__ (models.common.SOCA)
        if "__getattr__" in vars(m):
            found.update({f"{n}.{k}": getattr(m, k) for k in names if _is_module_class(getattr(m, k, None))})
    return found


def _is_module_class(obj):
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _torch_module_classes():
    """{'torch.nn.modules.x.Name': class} for the torch.nn layer classes, by the path pickle writes for them."""
    classes = (obj for obj in vars(nn).values() if _is_module_class(obj))
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes if c.__module__.startswith("torch.nn.modules.")}


def _numpy_scalar_globals():
    """numpy scalars (e.g. an np.float64 best_fitness), as torch documents them: scalar, dtype and dtype classes."""
    core = getattr(np, "_core", None) or np.core
    entries = [(core.multiarray.scalar, f"{p}.multiarray.scalar") for p in ("numpy.core", "numpy._core")]
    entries.append(np.dtype)
    dtypes = getattr(np, "dtypes", None)
    for kind in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    ):
        cls = type(np.dtype(kind))
        if dtypes is not None and cls is not np.dtype:
            entries.append((cls, f"numpy.dtypes.{cls.__name__}"))
    return entries


def checkpoint_safe_globals():
    """The safe_globals list for a YOLOv5 checkpoint: guarded module classes (project and torch.nn) and numpy."""
    entries = _numpy_scalar_globals() + [(range, "builtins.range")]  # v6.1's Sum keeps a range; calling it is safe
    for path, cls in {**_torch_module_classes(), **_project_module_classes()}.items():
        entries += [(_guard(cls), path), (cls, _BUILD_ONLY + path)]
    return entries


_BOILERPLATE = ("Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation")


def _refusal(weights, err):
    """One line: the file, what torch's unpickler refused (its boilerplate dropped), and that nothing ran."""
    lines = [ln.strip().split("WeightsUnpickler error:")[-1].strip() for ln in str(err).splitlines()]
    reasons = [ln for ln in lines if ln and not ln.startswith(_BOILERPLATE)] or [type(err).__name__]
    reason = re.sub(
        r"Unsupported global: GLOBAL (\S+) was not an allowed global by default.*",
        r"global \1 is not allowed in a checkpoint",
        reasons[0],
    )
    return UnsafeCheckpointError(f"{weights}: refused: {reason}; this file could run code, it was not loaded")


def _torch_load(path, weights, map_location):
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused below if it matters
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(weights, e) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{weights}: not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from None


def load_checkpoint(weights, map_location="cpu"):
    """Load a YOLOv5 .pt safely; clear errors for missing, corrupt, hostile or non-checkpoint files."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights '{weights}' not found (nothing is downloaded: pass a local .pt)")
    ckpt = _torch_load(path, weights, map_location)
    if isinstance(ckpt, nn.Module):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), nn.Module):
        raise ValueError(f"{weights}: not a YOLOv5 checkpoint: expected a dict holding a 'model' or 'ema' nn.Module")
    return ckpt


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(ckpt, path):
    """torch.save to a temp file in the same folder, then rename (0644 by umask): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # what a plain open() gives (0644 under the usual umask 022)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
