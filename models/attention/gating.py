"""Gating blocks that weight channels and positions: GAM, ShuffleAttention, TripletAttention, NAM, BAM.

All keep the shape: (B, C, H, W) -> (B, C, H, W). Their BatchNorms follow the BN-B1 rule (helpers.BatchNormB1), so
a batch of one on a 1x1 map (or a pooled vector) trains, as the YOLOv5 build and FLOPs probes need.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import BatchNorm1dB1, BatchNormB1, check_args, excite_mlp, reduced_channels
from models.placement import BEFORE_SPPF, P5_OUTPUT
from models.registry import Channels, register


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: channel g * (C / groups) + j moves to j * groups + g."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ConvNorm(nn.Module):
    """Conv2d (same padding), BatchNorm2d under the BN-B1 rule, then ReLU when `act`."""

    def __init__(self, c1, c2, k=1, s=1, d=1, g=1, bias=False, act=False, momentum=0.1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, d * (k - 1) // 2, d, g, bias)
        self.bn = BatchNormB1(c2, momentum=momentum)
        self.act = act

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.act else y


@register("GAM", "GAMAttention", channels=Channels.KEEP, placement=BEFORE_SPPF)
class GAM(nn.Module):
    """Global Attention Mechanism (Liu et al., arXiv 2112.05561, 2021).

    No official code exists. As the paper's figure (and one peer): a sigmoid on the per-pixel channel MLP (another
    peer multiplies by the raw MLP output), then two 7x7 conv-BN with a sigmoid. `group=True` is the grouped-conv
    variant (groups = reduction) with a 4-group channel shuffle of the spatial map; default off. 24.5 C^2 parameters
    at reduction 4: P5 only.
    """

    def __init__(self, c1, c2, reduction=4, min_channels=1, group=False):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        c_ = reduced_channels(c1, reduction, min_channels)
        if group:
            divisible = [("channels", c1, "reduction", reduction), ("channels", c1, "shuffle groups", 4)]
            check_args(self, divisible=[*divisible, ("reduced channels", c_, "reduction", reduction)])
        g = reduction if group else 1
        self.shuffle = 4 if group else 1
        self.channel = excite_mlp(c1, c_)  # Linear-ReLU-Linear on channels-last pixels is this 1x1 conv MLP
        self.spatial = nn.Sequential(ConvNorm(c1, c_, 7, g=g, bias=True, act=True), ConvNorm(c_, c1, 7, g=g, bias=True))

    def forward(self, x):
        x = x * torch.sigmoid(self.channel(x))
        s = torch.sigmoid(self.spatial(x))
        return x * (channel_shuffle(s, self.shuffle) if self.shuffle > 1 else s)


@register("ShuffleAttention", "SA", channels=Channels.KEEP, placement=P5_OUTPUT)
class ShuffleAttention(nn.Module):
    """Shuffle Attention (Zhang & Yang, ICASSP 2021, SA-Net).

    As the official sa_layer, but groups default to 8 (the YOLO peers' value) instead of 64: channels must be a
    multiple of 2 * groups (64 needs 128), and a YOLOv5n P3 has 64 channels. Other widths raise rather than regroup.
    """

    def __init__(self, c1, c2, groups=8):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"groups": groups})
        check_args(self, divisible=[("channels", c1, "2 * groups", 2 * groups)])
        self.groups = groups
        c_ = c1 // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, c_, 1, 1))  # both gates start at sigmoid(1)
        self.cbias = nn.Parameter(torch.ones(1, c_, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, c_, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, c_, 1, 1))
        self.gn = nn.GroupNorm(c_, c_)

    def forward(self, x):
        c, h, w = x.shape[1:]
        x0, x1 = x.reshape(-1, c // self.groups, h, w).chunk(2, 1)  # each group: a channel half, a spatial half
        y0 = x0 * torch.sigmoid(self.cweight * x0.mean((2, 3), keepdim=True) + self.cbias)
        y1 = x1 * torch.sigmoid(self.sweight * self.gn(x1) + self.sbias)
        return channel_shuffle(torch.cat((y0, y1), 1).reshape(x.shape), 2)


@register("TripletAttention", channels=Channels.KEEP, placement=P5_OUTPUT)
class TripletAttention(nn.Module):
    """Triplet Attention (Misra et al., WACV 2021, Rotate to Attend).

    As the official code: each branch pools (max, mean) over one axis, 7x7 conv without bias, BatchNorm (momentum
    0.01), sigmoid; the conv grids are (C, W), (H, C) and (H, W), in that orientation. The branches are averaged.
    """

    def __init__(self, c1, c2, no_spatial=False):
        super().__init__()
        check_args(self, keep=(c1, c2))
        self.cw = ConvNorm(2, 1, 7, momentum=0.01)
        self.hc = ConvNorm(2, 1, 7, momentum=0.01)
        self.hw = None if no_spatial else ConvNorm(2, 1, 7, momentum=0.01)

    def forward(self, x):
        p = torch.cat((x.amax(2, keepdim=True), x.mean(2, keepdim=True)), 2).transpose(1, 2)  # (B, 2, C, W)
        y = x * torch.sigmoid(self.cw(p)).transpose(1, 2)
        p = torch.cat((x.amax(3, keepdim=True), x.mean(3, keepdim=True)), 3).permute(0, 3, 2, 1)  # (B, 2, H, C)
        y = y + x * torch.sigmoid(self.hc(p)).permute(0, 3, 2, 1)
        if self.hw is None:
            return y / 2
        p = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1)  # (B, 2, H, W)
        return (y + x * torch.sigmoid(self.hw(p))) / 3


@register("NAM", channels=Channels.KEEP, placement=P5_OUTPUT)
class NAM(nn.Module):
    """Normalization-based Attention Module (Liu et al., arXiv 2111.12419, 2021).

    As the official code: the channel sub-module only (the paper's spatial one was never released). The paper's
    sparsity penalty on the BN weights is a training loss, not part of this block.
    """

    def __init__(self, c1, c2):
        super().__init__()
        check_args(self, keep=(c1, c2))
        self.bn = BatchNormB1(c1)

    def forward(self, x):
        gamma = self.bn.weight.detach().abs()  # the channel weights are read without gradient, as the official .data
        return x * torch.sigmoid(self.bn(x) * (gamma / gamma.sum()).view(1, -1, 1, 1))


@register("BAM", channels=Channels.KEEP, placement=BEFORE_SPPF)
class BAM(nn.Module):
    """Bottleneck Attention Module (Park et al., BMVC 2018, BAM).

    As the official code (BN on the hidden layers, 2 dilated 3x3 convs with dilation 4), except: the maps fuse by
    the paper's sum (`fuse='mul'`: the official code's product) and the channel pool is the mean over H and W
    (the official avg_pool2d with kernel H fails on rectangular maps).
    """

    def __init__(self, c1, c2, reduction=16, min_channels=1, fuse="sum"):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        if fuse not in ("sum", "mul"):
            raise ValueError(f"BAM: fuse must be 'sum' or 'mul', got {fuse!r}")
        c_ = reduced_channels(c1, reduction, min_channels)
        self.fuse = fuse
        self.fc1, self.bn1, self.fc2 = nn.Linear(c1, c_), BatchNorm1dB1(c_), nn.Linear(c_, c1)
        self.spatial = nn.Sequential(
            ConvNorm(c1, c_, 1, bias=True, act=True),
            ConvNorm(c_, c_, 3, d=4, bias=True, act=True),
            ConvNorm(c_, c_, 3, d=4, bias=True, act=True),
            nn.Conv2d(c_, 1, 1),
        )

    def forward(self, x):
        mc = self.fc2(F.relu(self.bn1(self.fc1(x.mean((2, 3))))))[..., None, None]  # (B, C, 1, 1)
        ms = self.spatial(x)  # (B, 1, H, W)
        return x * (1 + torch.sigmoid(mc + ms if self.fuse == "sum" else mc * ms))
