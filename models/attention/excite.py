"""Excitation gates from a gathered context: EffectiveSE, GatherExcite, ParNetAttention. Keep (B, C, H, W)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.gating import ConvNorm
from models.attention.helpers import BatchNormB1, check_args, excite_mlp, make_gate
from models.placement import BEFORE_SPPF
from models.registry import Channels, register


@register("EffectiveSE", "ESE", "EffectiveSELayer", channels=Channels.KEEP, placement=BEFORE_SPPF)
class EffectiveSE(nn.Module):
    """Effective Squeeze-Excitation (Lee & Park, CVPR 2020, CenterMask / VoVNetV2).

    As the official eSE module: one 1x1 conv C -> C (no reduction, no ReLU) on the mean, hard sigmoid gate.
    """

    def __init__(self, c1, c2, gate="hard_sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2))
        self.fc = nn.Conv2d(c1, c1, 1)
        self.act = make_gate(self, gate)

    def forward(self, x):
        return x * self.act(self.fc(x.mean((2, 3), keepdim=True)))


GE_VARIANTS = ("free", "param", "param_mlp")


@register("GatherExcite", "GE", channels=Channels.KEEP, placement=BEFORE_SPPF)
class GatherExcite(nn.Module):
    """Gather-Excite (Hu et al., NeurIPS 2018, Gather-Excite: Exploiting Feature Context in CNNs).

    variant 'free' (default, GE-theta-minus): the gather is the mean (extent 0) or an average pool of kernel 2e-1,
    stride e, padding e-1 that ignores the padding. 'param' (GE-theta): log2(e) depthwise 3x3 stride-2 conv-BN stages,
    ReLU between them; 'param_mlp' (GE-theta-plus): the same plus a final ReLU, then a 1x1 conv MLP C -> rd -> C with
    rd = round(C / reduction). The gate is resized to the map by PyTorch's nearest rule (as timm) and the block returns
    x * sigmoid(gate). The official global parametric gather (a depthwise conv as large as a fixed map) cannot follow
    YOLO's input sizes, so the parametric variants take an extent, a power of 2.
    """

    def __init__(self, c1, c2, variant="free", extent=0, reduction=16, min_channels=1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        if variant not in GE_VARIANTS:
            raise ValueError(f"GatherExcite: variant must be one of {', '.join(GE_VARIANTS)}, got {variant!r}")
        if not isinstance(extent, int) or isinstance(extent, bool) or extent < 0:
            raise ValueError(f"GatherExcite: extent must be an int >= 0, got {extent!r}")
        stages = extent.bit_length() - 1
        if variant != "free" and (extent < 2 or extent != 1 << stages):
            raise ValueError(f"GatherExcite: the {variant} gather needs an extent that is a power of 2, got {extent}")
        self.extent = extent
        if variant == "free":
            self.gather = nn.AvgPool2d(2 * extent - 1, extent, extent - 1, count_include_pad=False) if extent else None
            return
        last_relu = variant == "param_mlp"
        convs = [ConvNorm(c1, c1, 3, 2, g=c1, act=i < stages - 1 or last_relu) for i in range(stages)]
        rd = max(int(c1 / reduction + 0.5), min_channels)
        self.gather = nn.Sequential(*convs, *(excite_mlp(c1, rd) if last_relu else ()))

    def forward(self, x):
        if self.gather is None:
            return x * torch.sigmoid(x.mean((2, 3), keepdim=True))
        return x * F.interpolate(torch.sigmoid(self.gather(x)), size=x.shape[2:], mode="nearest")


@register("ParNetAttention", channels=Channels.KEEP, placement=BEFORE_SPPF)
class ParNetAttention(nn.Module):
    """ParNet's RepVGG-SSE block (Goyal et al., arXiv 2110.07641, 2021, Non-deep Networks).

    As the official un-fused block with in = out, stride 1: SiLU(BN(conv3x3(x)) + BN(conv1x1(x)) + u * g) with
    u = BN(x) and the skip-squeeze-excite gate g = sigmoid(conv1x1 without bias(mean(u))).
    """

    def __init__(self, c1, c2):
        super().__init__()
        check_args(self, keep=(c1, c2))
        self.bn = BatchNormB1(c1)
        self.sse = nn.Conv2d(c1, c1, 1, bias=False)
        self.conv3 = ConvNorm(c1, c1, 3)
        self.conv1 = ConvNorm(c1, c1, 1)
        self.act = nn.SiLU()

    def forward(self, x):
        u = self.bn(x)
        return self.act(self.conv3(x) + self.conv1(x) + u * torch.sigmoid(self.sse(u.mean((2, 3), keepdim=True))))
