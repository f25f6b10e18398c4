"""First-order channel attention: SE and ECA. Both keep channels: (B, C, H, W) -> (B, C, H, W)."""

import math

import torch.nn as nn

from models.attention.helpers import check_args, excite_mlp, make_gate, reduced_channels
from models.placement import BEFORE_SPPF
from models.registry import Channels, register


@register("SE", "SElayer", "SEAttention", channels=Channels.KEEP, placement=BEFORE_SPPF)
class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, Squeeze-and-Excitation Networks)."""

    def __init__(self, c1, c2, reduction=16, min_channels=1, gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(*excite_mlp(c1, reduced_channels(c1, reduction, min_channels)), make_gate(self, gate))

    def forward(self, x):
        return x * self.fc(self.pool(x))


def eca_kernel_size(c, gamma=2, b=1):
    """ECA's adaptive kernel size k = |log2(c) / gamma + b / gamma|_odd, truncated then made odd as ECA-Net's code.

    This is the nearest odd number of the paper (ties go up), so below 8 channels (t < 2) k is 1: the paper's formula
    gives a per-channel gate without cross-channel interaction there.
    """
    k = int(abs(math.log2(c) / gamma + b / gamma))
    return k if k % 2 else k + 1


@register("ECA", channels=Channels.KEEP, placement=BEFORE_SPPF)
class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020, ECA-Net)."""

    def __init__(self, c1, c2, gamma=2, b=1, gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), numbers={"gamma": gamma})
        k = eca_kernel_size(c1, gamma, b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.act = make_gate(self, gate)

    def forward(self, x):
        y = self.pool(x).flatten(1).unsqueeze(1)  # (B, 1, C): the 1D conv slides over channels
        return x * self.act(self.conv(y)).transpose(1, 2).unsqueeze(-1)
