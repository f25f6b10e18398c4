"""Loading YOLOv5 checkpoints (single or ensemble) with the safe loader."""

import math

import torch
import torch.nn as nn

from models.common import Conv
from models.registry import Channels, register
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
        models.append(eval_model(ckpt.get("ema") or ckpt["model"], inplace, fuse))
    if len(models) == 1:
        return models[-1]
    ncs = [m.model[-1].nc for m in models]
    if len(set(ncs)) > 1:
        raise ValueError(f"ensemble of models with different class counts: {ncs} ({weights})")
    models.names, models.yaml = models[0].names, models[0].yaml
    models.stride = models[int(torch.argmax(torch.tensor([m.stride.max() for m in models])))].stride
    return models


def eval_model(model, inplace=True, fuse=True):
    """A checkpoint's model made ready for inference as attempt_load makes it: float32, upgraded, fused, eval mode."""
    model = model.float()
    _upgrade_modules(model, inplace)
    return model.fuse().eval() if fuse else model.eval()


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


# YOLOv5 v6.1 experimental yaml modules (pickled as models.experimental.*)


@register("CrossConv", channels=Channels.CONV)
class CrossConv(nn.Module):
    """Cross convolution: a 1xk then a kx1 Conv (factorised kxk), optional residual (YOLOv5 v6.1 experiment)."""

    def __init__(self, c1, c2, k=3, s=1, g=1, e=1.0, shortcut=False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, (1, k), (1, s))
        self.cv2 = Conv(c_, c2, (k, 1), (s, 1), g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register("Sum", channels=Channels.SUM)
class Sum(nn.Module):
    """Sum of n same-shaped inputs, optionally weighted by learned 2*sigmoid(w) (Tan et al., EfficientDet, 2020)."""

    def __init__(self, n, weight=False):
        super().__init__()
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"Sum: n (the number of inputs) must be an int >= 2, got {n!r}")
        self.weight = weight
        self.iter = range(n - 1)
        if weight:
            self.w = nn.Parameter(-torch.arange(1.0, n) / 2)  # weights of inputs 2..n start at 2*sigmoid(-i/2)

    def forward(self, x):
        if len(x) != len(self.iter) + 1:
            raise ValueError(f"Sum was built for {len(self.iter) + 1} inputs, got {len(x)}")
        y = x[0]
        w = torch.sigmoid(self.w) * 2 if self.weight else None
        for i in self.iter:
            y = y + (x[i + 1] * w[i] if self.weight else x[i + 1])
        return y


def _mixconv_split(c2, k, equal_ch):
    """Output channels per kernel size: equal counts, or equal weights (c_i * k_i^2 alike) summing to c2."""
    n = len(k)
    if equal_ch:
        return [c2 // n + (i < c2 % n) for i in range(n)]
    share = [c2 / k_i**2 / sum(1 / k_j**2 for k_j in k) for k_i in k]
    c_ = [int(x) for x in share]
    for i in sorted(range(n), key=lambda i: c_[i] - share[i])[: c2 - sum(c_)]:  # largest remainders
        c_[i] += 1
    return c_


@register("MixConv2d", channels=Channels.CONV)
class MixConv2d(nn.Module):
    """Mixed depth-wise convolution: output channels split over kernel sizes k (Tan & Le, BMVC 2019), BN, SiLU."""

    def __init__(self, c1, c2, k=(1, 3), s=1, equal_ch=True):
        super().__init__()
        k = [k] if isinstance(k, int) else list(k)
        if not k or any(not isinstance(x, int) or x < 1 or x % 2 == 0 for x in k):
            raise ValueError(f"MixConv2d: kernel sizes must be positive odd ints, got {k!r}")
        c_ = _mixconv_split(c2, k, equal_ch)
        if min(c_) < 1:
            raise ValueError(f"MixConv2d: {c2} output channels cannot be split over kernels {k} ({c_})")
        self.m = nn.ModuleList(
            nn.Conv2d(c1, ci, ki, s, ki // 2, groups=math.gcd(c1, ci), bias=False) for ki, ci in zip(k, c_)
        )
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        y = self.act(self.bn(torch.cat([m(x) for m in self.m], 1)))
        return x + y if x.shape == y.shape else y  # residual where shapes allow (c1 == c2, s == 1)
