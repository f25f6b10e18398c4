"""Loading YOLOv5 weights, single or as an Ensemble: pickled checkpoints through the safe loader, and .safetensors.

The allow-list of module classes is built here, on the models side (utils.checkpoints takes it as an argument and
imports nothing from models): every class the registry holds and every nn.Module class reachable by name in an
imported `models.*` module, re-exports and lazy module `__getattr__` re-exports included, so old checkpoints keep
loading when a class moves. A new block file under models/attention/ is on the list with no edit here.
"""

import importlib
import logging
import pkgutil
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from models.config import ModelConfigError
from models.registry import entries
from models.yolo import Detect, Model
from utils.checkpoints import read_checkpoint
from utils.general import LOGGER
from utils.safetensors_file import is_safetensors, read_safetensors

_INPLACE_TYPES = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU, Detect, Model)


def _is_module_class(obj):
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def module_classes():
    """{'models.x.Name': class}: every registered class and every nn.Module class reachable in a models.* module."""
    for info in pkgutil.walk_packages([str(Path(__file__).resolve().parent)], "models."):
        importlib.import_module(info.name)
    mods = {n: m for n, m in list(sys.modules.items()) if m is not None and (n == "models" or n.startswith("models."))}
    found = {f"{n}.{k}": v for n, m in mods.items() for k, v in vars(m).items() if _is_module_class(v)}
    for e in entries():
        found.setdefault(f"{e.cls.__module__}.{e.cls.__qualname__}", e.cls)
    names = {k.rsplit(".", 1)[1] for k in found}
    for n, m in mods.items():  # lazy re-exports through a module __getattr__ (models.common.SOCA)
        if "__getattr__" in vars(m):
            found.update({f"{n}.{k}": getattr(m, k) for k in names if _is_module_class(getattr(m, k, None))})
    return found


def load_checkpoint(weights, map_location="cpu", trust=False):
    """A checkpoint dict ('model', and 'ema', 'epoch', ... as saved) from a .pt/.pth or a .safetensors file.

    Pickles go through the weights-only loader with module_classes(), and are refused on a torch below
    utils.checkpoints.SAFE_TORCH unless trust (--trust-weights); a .safetensors file holds no code and needs neither.
    """
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights '{weights}' not found (nothing is downloaded: pass a local .pt)")
    if is_safetensors(weights):
        return load_safetensors(weights, map_location)
    return read_checkpoint(weights, module_classes(), map_location, trust)


@contextmanager
def _quiet():
    """No INFO lines (layer table, summary) while a model is rebuilt from a file's yaml."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def load_safetensors(weights, map_location="cpu"):
    """{'model': float32 Model, 'ema': None, v6.1 fields}: the model rebuilt from the metadata yaml, then filled."""
    tensors, meta, fields = read_safetensors(weights)
    cfg = {**meta["yaml"], "yaml_file": f"{weights} (metadata 'yaml')"}
    try:
        with _quiet():
            model = Model(cfg, ch=cfg.get("ch", 3), nc=meta["nc"])
    except ModelConfigError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as e:
        raise ValueError(f"{weights}: metadata 'yaml' does not build a model: {type(e).__name__}: {e}") from None
    _check_fit(weights, model, tensors, meta["stride"])
    model.load_state_dict(tensors)
    model.yaml = {**meta["yaml"], "ch": model.yaml["ch"], "nc": model.yaml["nc"]}
    model.yaml_file = meta["yaml"].get("yaml_file", Path(weights).name)
    model.names = meta["names"]
    return {"model": model.to(map_location), "ema": None, **fields}


def _check_fit(weights, model, tensors, stride):
    """One line when the file's tensors or stride are not those of the model its yaml builds."""
    if [float(s) for s in model.stride] != [float(s) for s in stride]:
        raise ValueError(f"{weights}: metadata stride {stride} is not the stride {model.stride.tolist()} of its yaml")
    expected = model.state_dict()
    problems = (
        ("missing", [k for k in expected if k not in tensors]),
        ("not in the model", [k for k in tensors if k not in expected]),
        ("of another shape", [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]),
    )
    for what, keys in problems:
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise ValueError(f"{weights}: tensors do not fit the model of its metadata 'yaml': {keys[0]} {what}{more}")


class Ensemble(nn.ModuleList):
    """Several models whose detections are concatenated before NMS."""

    def forward(self, x, augment=False):
        return torch.cat([m(x, augment=augment)[0] for m in self], 1), None


def ready_model(model, inplace=True, fuse=True):
    """A loaded model as inference wants it: float32, attributes older pickles lack, fused (optional), eval."""
    model = model.float()
    _upgrade_modules(model, inplace)
    return model.fuse().eval() if fuse else model.eval()


def attempt_load(weights, map_location=None, inplace=True, fuse=True, trust=False):
    """Load a checkpoint (or a list of them, as an Ensemble) as a float32 eval model; .safetensors files too."""
    models = Ensemble()
    for w in weights if isinstance(weights, list) else [weights]:
        ckpt = load_checkpoint(w, map_location=map_location or "cpu", trust=trust)
        models.append(ready_model(ckpt.get("ema") or ckpt["model"], inplace, fuse))
    if len(models) == 1:
        return models[-1]
    ncs = [m.model[-1].nc for m in models]
    if len(set(ncs)) > 1:
        raise ValueError(f"ensemble of models with different class counts: {ncs} ({weights})")
    models.names, models.yaml = models[0].names, models[0].yaml
    models.stride = models[int(torch.argmax(torch.tensor([m.stride.max() for m in models])))].stride
    return models


def _upgrade_modules(model, inplace):
    """Attributes that pickles from older torch / YOLOv5 releases may lack."""
    for m in model.modules():
        if isinstance(m, _INPLACE_TYPES):
            m.inplace = inplace
        if isinstance(m, Detect) and not isinstance(m.anchor_grid, list):
            m.anchor_grid = [torch.zeros(1)] * m.nl
            m.grid = [torch.zeros(1)] * m.nl
        elif isinstance(m, nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
