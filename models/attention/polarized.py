"""Polarized Self-Attention: a channel-only and a spatial-only map, in parallel or in sequence. Keeps (B, C, H, W)."""

import torch
import torch.nn as nn

from models.attention.helpers import check_args
from models.placement import P5_OUTPUT
from models.registry import Channels, register

LAYOUTS = ("parallel", "sequential")


@register("PolarizedSelfAttention", "PSA", channels=Channels.KEEP, placement=P5_OUTPUT)
class PolarizedSelfAttention(nn.Module):
    """Polarized Self-Attention (Liu et al., arXiv 2107.00782, 2021).

    The paper's equations (the official code differs, DeLightCMU/PSA issue #5): channel map
    sigmoid(LN(Wz(Wv(x) softmax_N(Wq(x))))), spatial map sigmoid(softmax_C(mean(Wq'(x))) . Wv'(x)); the convs have no
    bias, as the official ones, and the q/v convs the official kaiming init. layout 'parallel' (default):
    x * A_ch(x) + x * A_sp(x); 'sequential': z = x * A_ch(x), then z * A_sp(z).
    """

    def __init__(self, c1, c2, layout="parallel"):
        super().__init__()
        check_args(self, keep=(c1, c2), divisible=[("channels", c1, "2", 2)])
        if layout not in LAYOUTS:
            raise ValueError(f"PolarizedSelfAttention: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        c_ = c1 // 2
        self.sequential = layout == "sequential"
        self.ch_wv = nn.Conv2d(c1, c_, 1, bias=False)
        self.ch_wq = nn.Conv2d(c1, 1, 1, bias=False)
        self.ch_wz = nn.Conv2d(c_, c1, 1, bias=False)
        self.ln = nn.LayerNorm(c1)
        self.sp_wv = nn.Conv2d(c1, c_, 1, bias=False)
        self.sp_wq = nn.Conv2d(c1, c_, 1, bias=False)
        for conv in (self.ch_wv, self.ch_wq, self.sp_wv, self.sp_wq):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def channel_map(self, x):
        """(B, C, 1, 1): the values Wv(x) pooled with the softmax over positions of Wq(x), widened, normalised."""
        v = self.ch_wv(x).flatten(2)  # (B, C/2, N)
        p = self.ch_wq(x).flatten(2).softmax(2)  # (B, 1, N)
        z = torch.matmul(v, p.transpose(1, 2)).unsqueeze(-1)  # (B, C/2, 1, 1)
        return torch.sigmoid(self.ln(self.ch_wz(z).flatten(1)))[..., None, None]

    def spatial_map(self, x):
        """(B, 1, H, W): the values Wv'(x) mixed over channels by the softmax of the pooled query."""
        q = self.sp_wq(x.mean((2, 3), keepdim=True)).flatten(1).softmax(1)  # mean of a bias-free 1x1 conv, (B, C/2)
        s = torch.matmul(q.unsqueeze(1), self.sp_wv(x).flatten(2))  # (B, 1, N)
        return torch.sigmoid(s).reshape(-1, 1, *x.shape[2:])

    def forward(self, x):
        if self.sequential:
            z = x * self.channel_map(x)
            return z * self.spatial_map(z)
        return x * self.channel_map(x) + x * self.spatial_map(x)
