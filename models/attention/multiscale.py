"""Multi-scale and strip-pooling attention: EMA, MLCA, ELA, CPCA. All keep the shape (B, C, H, W)."""

import math

import torch
import torch.nn as nn

from models.attention.channel import eca_kernel_size
from models.attention.helpers import check_args, excite_mlp, reduced_channels
from models.placement import AFTER_LAST_TWO_C3, BEFORE_SPPF, DETECT_INPUTS, INSIDE_BACKBONE_C3
from models.registry import Channels, register


class GroupNormAnySize(nn.GroupNorm):
    """GroupNorm that also takes one value per group (its output is then the bias), which nn.GroupNorm refuses."""

    def forward(self, x):
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


@register("EMA", channels=Channels.KEEP, placement=AFTER_LAST_TWO_C3)
class EMA(nn.Module):
    """Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023, EMA).

    Official math with the official factor 32, and the authors' placement (after the backbone's last two C3). The
    channels split into G = gcd(factor, C) groups: the official factor whenever it divides C (the official reshape
    needs that), else the largest divisor of C that divides it (16 channels: 16 groups of one channel).
    """

    def __init__(self, c1, c2, factor=32):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"factor": factor})
        self.groups = math.gcd(factor, c1)
        c_ = c1 // self.groups
        self.conv1x1 = nn.Conv2d(c_, c_, 1)
        self.conv3x3 = nn.Conv2d(c_, c_, 3, padding=1)
        self.gn = GroupNormAnySize(c_, c_)

    def forward(self, x):
        c, h, w = x.shape[1:]
        g = x.reshape(-1, c // self.groups, h, w)  # (B*G, C/G, H, W): the groups share every layer
        strips = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
        u = self.conv1x1(strips).sigmoid()  # one 1x1 conv over the H + W strip, as coordinate attention
        x1 = self.gn(g * u[:, :, :h] * u[:, :, h:].transpose(2, 3))
        x2 = self.conv3x3(g)
        a1 = x1.mean((2, 3)).softmax(1).unsqueeze(1)  # (B*G, 1, C/G)
        a2 = x2.mean((2, 3)).softmax(1).unsqueeze(1)
        weights = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # cross-spatial learning: (B*G, 1, H*W)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(x.shape)


def adaptive_pool_matrix(n_in, n_out, like):
    """(n_out, n_in) matrix P with P @ v = adaptive_avg_pool1d(v, n_out), in the dtype and on the device of `like`.

    Row i averages v over floor(i * n_in / n_out) <= t < ceil((i + 1) * n_in / n_out), PyTorch's bins, so it also
    "unpools" when n_out > n_in. A matmul exports to ONNX for every size; adaptive pooling does not.
    """
    i = torch.arange(n_out, device=like.device).unsqueeze(1)
    t = torch.arange(n_in, device=like.device)
    start, end = i * n_in // n_out, ((i + 1) * n_in + n_out - 1) // n_out  # non-negative: ONNX Div truncates
    inside = (t >= start) & (t < end)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


@register("MLCA", channels=Channels.KEEP, placement=INSIDE_BACKBONE_C3)
class MLCA(nn.Module):
    """Mixed Local Channel Attention (Wan et al., EAAI 2023, MLCA).

    The fixed official version (global branch on the mean of the local cells). Both adaptive average poolings, down to
    local_size x local_size and the "unpooling" back to H x W, are fixed averaging matrices: PyTorch's bins exactly,
    exportable for every size. Placed like the official MobileNetV3 yaml, where it replaces SE inside every block.
    """

    def __init__(self, c1, c2, local_size=5, gamma=2, b=1, local_weight=0.5):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"local_size": local_size}, numbers={"gamma": gamma})
        if not 0 <= local_weight <= 1:
            raise ValueError(f"MLCA: local_weight must be in [0, 1], got {local_weight!r}")
        k = eca_kernel_size(c1, gamma, b)  # the official floor(|log2 C + b| / gamma), made odd
        self.local_size, self.local_weight = local_size, float(local_weight)
        self.conv_local = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.conv_global = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        c, h, w = x.shape[1:]
        s = self.local_size
        local = adaptive_pool_matrix(h, s, x) @ x @ adaptive_pool_matrix(w, s, x).T  # (B, C, s, s)
        # one sequence over all cells, channels fastest: the 1-D kernel runs across cell boundaries (official)
        seq = local.permute(0, 2, 3, 1).reshape(-1, 1, s * s * c)
        att_local = self.conv_local(seq).reshape(-1, s, s, c).permute(0, 3, 1, 2).sigmoid()
        att_global = self.conv_global(local.mean((2, 3)).unsqueeze(1)).reshape(-1, c, 1, 1).sigmoid()
        mix = (1 - self.local_weight) * att_global + self.local_weight * att_local
        return x * (adaptive_pool_matrix(s, h, x) @ mix @ adaptive_pool_matrix(s, w, x).T)


ELA_VARIANTS = {"T": (5, None, 32), "B": (7, None, 16), "S": (5, 8, 16), "L": (7, 8, 16)}  # kernel, ch/group, GN


@register("ELA", channels=Channels.KEEP, placement=DETECT_INPUTS)
class ELA(nn.Module):
    """Efficient Local Attention (Xu & Wan, arXiv 2403.01123, 2024, ELA).

    The paper's variants phi (1-D conv kernel, channels per conv group, GroupNorm groups): T (5, 1, 32), B (7, 1, 16),
    S (5, 8, 16), L (7, 8, 16); default B. One bias-free conv and one GroupNorm shared by the height and width strips.
    No official code exists; the peer version with a 1x1 biased conv is not the paper's. Placed in the neck, as peers.
    """

    def __init__(self, c1, c2, phi="B"):
        super().__init__()
        check_args(self, keep=(c1, c2))
        if phi not in ELA_VARIANTS:
            raise ValueError(f"ELA: phi must be one of {', '.join(ELA_VARIANTS)}, got {phi!r}")
        k, per_group, gn = ELA_VARIANTS[phi]
        per_group = per_group or 1
        check_args(
            self, divisible=[("channels", c1, "GroupNorm groups", gn), ("channels", c1, "conv group", per_group)]
        )
        self.conv = nn.Conv1d(c1, c1, k, padding=k // 2, groups=c1 // per_group, bias=False)
        self.gn = GroupNormAnySize(gn, c1)

    def strip_gate(self, z):
        return self.gn(self.conv(z)).sigmoid()

    def forward(self, x):
        return x * self.strip_gate(x.mean(3)).unsqueeze(3) * self.strip_gate(x.mean(2)).unsqueeze(2)


def depthwise(c, kh, kw):
    """A depthwise conv with bias keeping the map size, kernel kh x kw (odd)."""
    return nn.Conv2d(c, c, (kh, kw), padding=(kh // 2, kw // 2), groups=c)


@register("CPCA", channels=Channels.KEEP, placement=BEFORE_SPPF)
class CPCA(nn.Module):
    """Channel Prior Convolutional Attention (Huang et al., 2023, CPCANet).

    As the official module: one 1x1 conv used three times, channel attention as the sum of the average- and max-pooled
    sigmoid gates, then multi-scale depthwise strip convs (5x5; 1x7 7x1; 1x11 11x1; 1x21 21x1).
    """

    def __init__(self, c1, c2, reduction=4, min_channels=1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        self.proj = nn.Conv2d(c1, c1, 1)
        self.act = nn.GELU()
        self.mlp = excite_mlp(c1, reduced_channels(c1, reduction, min_channels))
        self.dw5 = depthwise(c1, 5, 5)
        self.strips = nn.ModuleList(nn.Sequential(depthwise(c1, 1, k), depthwise(c1, k, 1)) for k in (7, 11, 21))

    def forward(self, x):
        u = self.act(self.proj(x))
        u = u * (self.mlp(u.mean((2, 3), keepdim=True)).sigmoid() + self.mlp(u.amax((2, 3), keepdim=True)).sigmoid())
        s0 = self.dw5(u)
        s = s0 + sum(strip(s0) for strip in self.strips)
        return self.proj(self.proj(s) * u)
