"""Blocks that weight positions (or positions and channels): CBAM, scSE, SGE, CoordAtt, SimAM.

All keep the shape: (B, C, H, W) -> (B, C, H, W).
"""
import torch
import torch.nn as nn

from models.attention.channel import squeeze_excite_mlp
from models.attention.checks import (
    check_divisible,
    check_keep_channels,
    check_positive_int,
    check_positive_number,
)
from models.registry import Channels, register


@register("CBAM", channels=Channels.KEEP)
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018, CBAM)."""

    def __init__(self, c1, c2, r=16, k=7):
        super().__init__()
        check_keep_channels("CBAM", c1, c2)
        check_positive_int("CBAM", "r", r)
        check_positive_int("CBAM", "k", k)
        if k % 2 == 0:
            raise ValueError(f"CBAM: spatial kernel k must be odd to keep the map size, got {k}")
        self.mlp = squeeze_excite_mlp(c1, max(c1 // r, 1), bias=False)
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, x):
        x = x * self.act(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        s = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * self.act(self.spatial(s))


@register("scSE", channels=Channels.KEEP)
class scSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (Roy et al., MICCAI 2018)."""

    def __init__(self, c1, c2, r=2):
        super().__init__()
        check_keep_channels("scSE", c1, c2)
        check_positive_int("scSE", "r", r)
        self.cse = nn.Sequential(nn.AdaptiveAvgPool2d(1), squeeze_excite_mlp(c1, max(c1 // r, 1)), nn.Sigmoid())
        self.sse = nn.Sequential(nn.Conv2d(c1, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.cse(x) + x * self.sse(x)


@register("SGE", "SpatialGroupEnhance", channels=Channels.KEEP)
class SGE(nn.Module):
    """Spatial Group-wise Enhance (Li et al., 2019, Spatial Group-wise Enhance)."""

    def __init__(self, c1, c2, groups=8, eps=1e-5):
        super().__init__()
        check_keep_channels("SGE", c1, c2)
        check_positive_int("SGE", "groups", groups)
        check_divisible("SGE", "channels", c1, groups, "groups")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))  # gamma = 0, beta = 1: uniform start
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x):
        _, c, h, w = x.shape
        xg = x.reshape(-1, c // self.groups, h, w)  # (B*G, C/G, H, W)
        xf = xg.float()  # FP32 statistics: the products and squares overflow FP16
        sim = (xf * xf.mean((2, 3), keepdim=True)).sum(1).reshape(-1, self.groups, h * w)
        sim = sim - sim.mean(2, keepdim=True)  # similarity to the group mean, normalised over positions
        sim = sim / (sim.pow(2).mean(2, keepdim=True) + self.eps).sqrt()
        a = sim.reshape(-1, self.groups, h, w) * self.weight.float() + self.bias.float()
        return (xg * torch.sigmoid(a).to(x.dtype).reshape(-1, 1, h, w)).reshape(x.shape)


@register("CoordAtt", channels=Channels.KEEP)
class CoordAtt(nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021, Coordinate Attention for Efficient Mobile Network Design)."""

    def __init__(self, c1, c2, r=32):
        super().__init__()
        check_keep_channels("CoordAtt", c1, c2)
        check_positive_int("CoordAtt", "r", r)
        c_ = max(8, c1 // r)
        self.squeeze = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.BatchNorm2d(c_), nn.Hardswish())
        self.conv_h = nn.Conv2d(c_, c1, 1)
        self.conv_w = nn.Conv2d(c_, c1, 1)

    def forward(self, x):
        h = x.shape[2]
        pooled_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.squeeze(torch.cat((pooled_h, pooled_w), 2))  # shared transform over the H + W strip
        y_h, y_w = y[:, :, :h], y[:, :, h:]
        return x * torch.sigmoid(self.conv_h(y_h)) * torch.sigmoid(self.conv_w(y_w).transpose(2, 3))


@register("SimAM", channels=Channels.KEEP)
class SimAM(nn.Module):
    """Parameter-free energy-based attention (Yang et al., ICML 2021, SimAM)."""

    def __init__(self, c1, c2, e_lambda=1e-4):
        super().__init__()
        check_keep_channels("SimAM", c1, c2)
        check_positive_number("SimAM", "e_lambda", e_lambda)
        self.e_lambda = e_lambda

    def forward(self, x):
        h, w = x.shape[2:]
        n = max(h * w - 1, 1)
        xf = x.float()  # FP32 statistics: squared deviations overflow FP16
        d = (xf - xf.mean((2, 3), keepdim=True)).pow(2)
        # inverse minimal energy 1/e* = d / (4 (sigma^2 + lambda)) + 1/2 with sigma^2 = sum(d) / n
        y = d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y).to(x.dtype)
