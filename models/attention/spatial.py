"""Blocks that weight positions (or positions and channels): CBAM, scSE, SGE, CoordAtt, SimAM.

All keep the shape: (B, C, H, W) -> (B, C, H, W).
"""

import torch
import torch.nn as nn

from models.attention.helpers import check_args, excite_mlp, make_gate, reduced_channels
from models.placement import BEFORE_SPPF
from models.registry import Channels, register


@register("CBAM", channels=Channels.KEEP, placement=BEFORE_SPPF)
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018, CBAM).

    As the official code: MLP with biases, spatial input (max, mean) over channels, 7x7 conv without bias, then
    BatchNorm. The seed post's version has no BatchNorm after the 7x7 conv.
    """

    def __init__(self, c1, c2, reduction=16, min_channels=1, gate="sigmoid", k=7):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels, "k": k})
        if k % 2 == 0:
            raise ValueError(f"CBAM: spatial kernel k must be odd to keep the map size, got {k}")
        self.mlp = excite_mlp(c1, reduced_channels(c1, reduction, min_channels))
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, k, padding=k // 2, bias=False), nn.BatchNorm2d(1))
        self.act = make_gate(self, gate)

    def forward(self, x):
        x = x * self.act(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        s = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1)
        return x * self.act(self.spatial(s))


@register("scSE", channels=Channels.KEEP, placement=BEFORE_SPPF)
class scSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (Roy et al., MICCAI 2018)."""

    def __init__(self, c1, c2, reduction=2, min_channels=1, gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        c_ = reduced_channels(c1, reduction, min_channels)
        self.cse = nn.Sequential(nn.AdaptiveAvgPool2d(1), excite_mlp(c1, c_), make_gate(self, gate))
        self.sse = nn.Sequential(nn.Conv2d(c1, 1, 1), make_gate(self, gate))

    def forward(self, x):
        return x * self.cse(x) + x * self.sse(x)


@register("SGE", "SpatialGroupEnhance", channels=Channels.KEEP, placement=BEFORE_SPPF)
class SGE(nn.Module):
    """Spatial Group-wise Enhance (Li et al., 2019, Spatial Group-wise Enhance).

    As the official code: the similarity map minus its mean, divided by (unbiased std + eps). The seed post divides
    by sqrt(biased variance + eps). On a 1x1 map (no unbiased std) the centred map is 0 and stays 0.
    """

    def __init__(self, c1, c2, groups=8, gate="sigmoid", eps=1e-5):
        super().__init__()
        check_args(
            self,
            keep=(c1, c2),
            ints={"groups": groups},
            numbers={"eps": eps},
            divisible=[("channels", c1, "groups", groups)],
        )
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))  # gamma = 0, beta = 1: uniform start
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.act = make_gate(self, gate)

    def forward(self, x):
        _, c, h, w = x.shape
        xg = x.reshape(-1, c // self.groups, h, w)  # (B*G, C/G, H, W)
        xf = xg.float()  # FP32 statistics: the products and squares overflow FP16
        t = (xf * xf.mean((2, 3), keepdim=True)).sum(1).reshape(-1, self.groups, h * w)
        t = t - t.mean(2, keepdim=True)
        t = t / (t.std(2, keepdim=True, correction=int(h * w > 1)) + self.eps)
        a = t.reshape(-1, self.groups, h, w) * self.weight.float() + self.bias.float()
        return (xg * self.act(a).to(x.dtype).reshape(-1, 1, h, w)).reshape(x.shape)


@register("CoordAtt", channels=Channels.KEEP, placement=BEFORE_SPPF)
class CoordAtt(nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021, Coordinate Attention for Efficient Mobile Network Design)."""

    def __init__(self, c1, c2, reduction=32, min_channels=8, gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        c_ = reduced_channels(c1, reduction, min_channels)
        self.squeeze = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.BatchNorm2d(c_), nn.Hardswish())
        self.conv_h = nn.Conv2d(c_, c1, 1)
        self.conv_w = nn.Conv2d(c_, c1, 1)
        self.act = make_gate(self, gate)

    def forward(self, x):
        h = x.shape[2]
        pooled_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.squeeze(torch.cat((pooled_h, pooled_w), 2))  # shared transform over the H + W strip
        y_h, y_w = y[:, :, :h], y[:, :, h:]
        return x * self.act(self.conv_h(y_h)) * self.act(self.conv_w(y_w).transpose(2, 3))


@register("SimAM", channels=Channels.KEEP, placement=BEFORE_SPPF)
class SimAM(nn.Module):
    """Parameter-free energy-based attention (Yang et al., ICML 2021, SimAM).

    As the official code, with n = max(h * w - 1, 1) so that a 1x1 map does not divide by zero.
    """

    def __init__(self, c1, c2, e_lambda=1e-4, gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), numbers={"e_lambda": e_lambda})
        self.e_lambda = e_lambda
        self.act = make_gate(self, gate)

    def forward(self, x):
        h, w = x.shape[2:]
        n = max(h * w - 1, 1)
        xf = x.float()  # FP32 statistics: squared deviations overflow FP16
        d = (xf - xf.mean((2, 3), keepdim=True)).pow(2)
        # inverse minimal energy 1/e* = d / (4 (sigma^2 + lambda)) + 1/2 with sigma^2 = sum(d) / n
        y = d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.act(y).to(x.dtype)
