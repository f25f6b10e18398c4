"""First-order channel attention: SE and ECA. Both keep channels: (B, C, H, W) -> (B, C, H, W)."""
import math

import torch.nn as nn

from models.attention.checks import check_keep_channels, check_positive_int, check_positive_number
from models.registry import Channels, register


def squeeze_excite_mlp(c, c_, bias=True):
    """1x1 conv bottleneck c -> c_ -> c with a ReLU between (the SE-style MLP on pooled maps)."""
    return nn.Sequential(nn.Conv2d(c, c_, 1, bias=bias), nn.ReLU(inplace=True), nn.Conv2d(c_, c, 1, bias=bias))


@register("SE", "SElayer", "SEAttention", channels=Channels.KEEP)
class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, Squeeze-and-Excitation Networks)."""

    def __init__(self, c1, c2, r=16):
        super().__init__()
        check_keep_channels("SE", c1, c2)
        check_positive_int("SE", "r", r)
        c_ = max(c1 // r, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(*squeeze_excite_mlp(c1, c_), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(self.pool(x))


def eca_kernel_size(c, gamma=2, b=1):
    """ECA's adaptive 1D kernel size: the odd number nearest to |log2(c) / gamma + b / gamma|."""
    k = int(abs(math.log2(c) / gamma + b / gamma))
    return k if k % 2 else k + 1


@register("ECA", channels=Channels.KEEP)
class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020, ECA-Net)."""

    def __init__(self, c1, c2, gamma=2, b=1):
        super().__init__()
        check_keep_channels("ECA", c1, c2)
        check_positive_number("ECA", "gamma", gamma)
        k = eca_kernel_size(c1, gamma, b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, x):
        y = self.pool(x).flatten(1).unsqueeze(1)  # (B, 1, C): the 1D conv slides over channels
        return x * self.act(self.conv(y)).transpose(1, 2).unsqueeze(-1)
