"""Loading YOLOv5 checkpoints (single or ensemble) with the safe loader."""
import torch
import torch.nn as nn

from models.yolo import Detect, Model
from utils.checkpoints import load_checkpoint

_INPLACE_TYPES = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU, Detect, Model)


class Ensemble(nn.ModuleList):
    """Several models whose detections are concatenated before NMS."""

    def forward(self, x, augment=False):
        return torch.cat([m(x, augment=augment)[0] for m in self], 1), None


def attempt_load(weights, map_location=None, inplace=True, fuse=True):
    """Load a checkpoint (or a list of them, as an Ensemble) as a float32 eval model."""
    models = Ensemble()
    for w in weights if isinstance(weights, list) else [weights]:
        ckpt = load_checkpoint(w, map_location=map_location or "cpu")
        m = (ckpt.get("ema") or ckpt["model"]).float()
        _upgrade_modules(m, inplace)
        models.append(m.fuse().eval() if fuse else m.eval())
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
