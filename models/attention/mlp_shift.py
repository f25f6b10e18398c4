"""Spatial-shift MLP attention: S2Attention (S2-MLPv2). Keeps the shape (B, C, H, W)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import check_args
from models.attention.stable import at_least_fp32, fp32_region
from models.placement import P5_OUTPUT
from models.registry import Channels, register

SHIFT1 = ((2, 1), (2, -1), (3, 1), (3, -1))  # (dim, step) per channel quarter: down, up along H, then along W
SHIFT2 = ((3, 1), (3, -1), (2, 1), (2, -1))  # the same moves with the axes swapped


def shift(t, dim, step):
    """t moved one step along dim (step 1: index i takes i - 1; -1: i takes i + 1); the border keeps its own value."""
    n = t.shape[dim]
    if step > 0:
        return torch.cat((t.narrow(dim, 0, 1), t.narrow(dim, 0, n - 1)), dim)
    return torch.cat((t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)), dim)


def spatial_shift(z, moves):
    """Channel quarters [0, C//4), [C//4, C//2), [C//2, 3C//4), [3C//4, C) of z, each shifted by its move."""
    c = z.shape[1]
    bounds = (0, c // 4, c // 2, 3 * c // 4, c)
    return torch.cat([shift(z[:, a:b], *m) for a, b, m in zip(bounds, bounds[1:], moves)], 1)


@register("S2Attention", "S2MLPv2", channels=Channels.KEEP, placement=P5_OUTPUT)
class S2Attention(nn.Module):
    """Spatial-shift split attention (Yu et al., 2021, S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision).

    The operator the YOLO collections use (External-Attention's S2Attention) with its bugs fixed as in Jittor-MLP:
    the split attention is sized for c1 (not a fixed 512) and the shifts are out of place. Its split-attention input
    (a sum over 3 H W values) and MLP run in FP32. residual=True gives the paper's x + S2(LayerNorm(x)); the default
    (the collections' bare operator) replaces the features.
    """

    def __init__(self, c1, c2, residual=False):
        super().__init__()
        check_args(self, keep=(c1, c2))
        if c1 < 4:
            raise ValueError(f"S2Attention shifts channel quarters: c1 must be >= 4, got {c1}")
        self.mlp1 = nn.Conv2d(c1, 3 * c1, 1)
        self.split1 = nn.Linear(c1, c1, bias=False)
        self.split2 = nn.Linear(c1, 3 * c1, bias=False)
        self.mlp2 = nn.Conv2d(c1, c1, 1)
        self.norm = nn.LayerNorm(c1) if residual else None

    def forward(self, x):
        if self.norm is None:
            return self.s2(x)
        return x + self.s2(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))

    def s2(self, x):
        c, z = x.shape[1], self.mlp1(x)
        z1, z2, z3 = z[:, :c], z[:, c : 2 * c], z[:, 2 * c :]  # slices: a dynamo-exported Split fails at opset 17
        xs = (spatial_shift(z1, SHIFT1), spatial_shift(z2, SHIFT2), z3)
        a = self.split_weights(xs)
        return self.mlp2(a[:, 0] * xs[0] + a[:, 1] * xs[1] + a[:, 2] * xs[2])

    def split_weights(self, xs):
        """(B, 3, C, 1, 1) branch weights: softmax over branches of W2 GELU(W1 sum of the branches over positions)."""
        with fp32_region(xs[0].device.type):
            s = sum(at_least_fp32(t).sum((2, 3)) for t in xs)
            w1, w2 = at_least_fp32(self.split1.weight), at_least_fp32(self.split2.weight)
            logits = F.linear(F.gelu(F.linear(s, w1)), w2).reshape(-1, 3, xs[0].shape[1])
            return logits.softmax(1).to(xs[0].dtype)[..., None, None]
