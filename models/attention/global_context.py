"""Global-context attention: the double attention block of A^2-Nets. Keeps the shape (B, C, H, W)."""

import torch
import torch.nn as nn

from models.attention.helpers import check_args, reduced_channels
from models.placement import AFTER_FIRST_C3
from models.registry import Channels, register


@register("DoubleAttention", "DoubleAttentionLayer", "A2", channels=Channels.KEEP, placement=AFTER_FIRST_C3)
class DoubleAttention(nn.Module):
    """Double attention block, gather then distribute (Chen et al., NeurIPS 2018, A^2-Nets)."""

    def __init__(self, c1, c2, reduction=4, min_channels=1, c_m=None, c_n=None):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        c_m = reduced_channels(c1, reduction, min_channels) if c_m is None else c_m
        c_n = reduced_channels(c1, reduction, min_channels) if c_n is None else c_n
        check_args(self, ints={"c_m": c_m, "c_n": c_n})
        self.c_m, self.c_n = c_m, c_n
        self.conv_a = nn.Conv2d(c1, c_m, 1)
        self.conv_b = nn.Conv2d(c1, c_n, 1)
        self.conv_v = nn.Conv2d(c1, c_n, 1)
        self.proj = nn.Conv2d(c_m, c1, 1)
        nn.init.zeros_(self.proj.weight)  # residual block starts as the identity, so pretrained weights keep working
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        h, w = x.shape[2:]
        a = self.conv_a(x).flatten(2)  # (B, c_m, HW) features
        b = self.conv_b(x).flatten(2).softmax(dim=2)  # (B, c_n, HW) attention maps, each over the positions
        v = self.conv_v(x).flatten(2).softmax(dim=1)  # (B, c_n, HW) at each position, weights over the c_n descriptors
        g = torch.bmm(a, b.transpose(1, 2))  # gather: (B, c_m, c_n) global descriptors
        z = torch.bmm(g, v)  # distribute: (B, c_m, HW)
        return x + self.proj(z.reshape(-1, self.c_m, h, w))
