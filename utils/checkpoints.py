"""Checkpoint I/O that never runs code from the file: torch's weights-only unpickler and atomic saving.

A YOLOv5 checkpoint pickles whole nn.Module objects, so `torch.load(weights_only=True)` needs the module classes
on its allow-list. They are named through `torch.serialization.safe_globals`, built at load time from the project's
module classes (passed in by the caller: `models.loading` lists them, utils imports nothing from models), the
`torch.nn` layer classes and the numpy scalar types that torch documents. Each class is named through a guard:
torch's unpickler calls an allow-listed global on REDUCE, and a module's `__init__` must never run with arguments
taken from the file (e.g. `Model(cfg=...)`).

The weights-only unpickler itself is only safe from torch 2.10 (SAFE_TORCH): below it, a pickle is refused unless
the caller vouches for the file (`trust=True`, the scripts' --trust-weights).
"""

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from utils.atomic import atomic_write
from utils.general import LOGGER

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


def checkpoint_safe_globals(module_classes):
    """The safe_globals list for a YOLOv5 checkpoint: guarded module classes and numpy.

    module_classes: {'models.x.Name': class} of the project (models.loading.module_classes()); the torch.nn layer
    classes are added here.
    """
    entries = _numpy_scalar_globals() + [(range, "builtins.range")]  # v6.1's Sum keeps a range; calling it is safe
    for path, cls in {**_torch_module_classes(), **module_classes}.items():
        entries += [(_guard(cls), path), (cls, _BUILD_ONLY + path)]
    return entries


SAFE_TORCH = (2, 10)  # the first torch whose weights-only unpickler has no known code-execution advisory
ADVISORIES = (
    "CVE-2025-32434: torch.load(weights_only=True) can run code below torch 2.6; "
    "CVE-2026-24747: the weights-only unpickler can corrupt memory below torch 2.10"
)


class UnsafeTorchError(UnsafeCheckpointError):
    """This torch's weights-only unpickler has known advisories: a pickled checkpoint is not loaded."""


def torch_version():
    """(major, minor) of the torch imported now (read at call time, so a test can set torch.__version__)."""
    m = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    return (int(m[1]), int(m[2])) if m else (0, 0)


def check_torch_for_pickles(weights, trust=False):
    """UnsafeTorchError below SAFE_TORCH, unless trust: then a warning and the load goes on."""
    if torch_version() >= SAFE_TORCH:
        return
    floor = ".".join(map(str, SAFE_TORCH))
    if trust:
        LOGGER.warning(f"WARNING: {weights}: loaded with torch {torch.__version__} (< {floor}) as --trust-weights asks")
        return
    raise UnsafeTorchError(
        f"{weights}: refused: torch {torch.__version__} cannot load a pickled checkpoint safely ({ADVISORIES}); "
        f"upgrade (pip install -U 'torch>={floor}'), use a .safetensors file "
        f"(python export.py --weights {Path(weights).name} --include safetensors, on a safe torch), "
        f"or pass --trust-weights (trust=True) for a file you vouch for"
    )


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


def _torch_load(path, weights, map_location, module_classes):
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals(module_classes)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused below if it matters
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(weights, e) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{weights}: not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from None


def read_checkpoint(weights, module_classes, map_location="cpu", trust=False):
    """Load a YOLOv5 .pt/.pth safely, allowing module_classes; clear errors for missing, corrupt, hostile or
    non-checkpoint files, and for a torch below SAFE_TORCH unless trust."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights '{weights}' not found (nothing is downloaded: pass a local .pt)")
    check_torch_for_pickles(weights, trust)
    ckpt = _torch_load(path, weights, map_location, module_classes)
    if isinstance(ckpt, nn.Module):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), nn.Module):
        raise ValueError(f"{weights}: not a YOLOv5 checkpoint: expected a dict holding a 'model' or 'ema' nn.Module")
    return ckpt


def save_checkpoint(ckpt, path):
    """torch.save to a temp file in the same folder, then rename (0644 by umask): never half a file.

    A failed write (full disk) raises utils.atomic.WriteError naming the file; path keeps its previous contents."""
    atomic_write(path, lambda f: torch.save(ckpt, f))
