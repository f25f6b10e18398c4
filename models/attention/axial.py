"""Axial attention: AxialAttention, axial-deeplab's position-sensitive axial attention in its residual block.

Keeps the shape: (B, C, H, W) -> (B, C, H, W), on any H x W.
"""

import torch
import torch.nn as nn

from models.attention.helpers import check_args
from models.placement import P5_OUTPUT
from models.registry import Channels, register


class AxialLayer(nn.Module):
    """Position-sensitive self-attention along one axis: (N, C, L) -> (N, C, L), group-major channels.

    Per group, q and k take gp/2 channels and v gp; logits BN(q.k) + BN(q.Rq) + BN(k.Rk) (no 1/sqrt(d) scale) and the
    output BN(attn v) + BN(attn Rv), as axial-deeplab. The relative table R spans offsets -(span-1)..span-1 (offset
    i - j for q and v, j - i for k); offsets beyond span reuse the table's last column (axial-deeplab needs L == span;
    for L <= span this is its formula with the table's central 2L - 1 columns).
    """

    def __init__(self, c, groups, span):
        super().__init__()
        self.groups, self.gp, self.span = groups, c // groups, span
        self.qkv = nn.Conv1d(c, 2 * c, 1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(2 * c)
        self.bn_logits = nn.BatchNorm2d(3 * groups)
        self.bn_out = nn.BatchNorm1d(2 * c)
        self.rel = nn.Parameter(torch.randn(2 * self.gp, 2 * span - 1) * self.gp**-0.5)
        nn.init.normal_(self.qkv.weight, std=c**-0.5)

    def forward(self, x):
        n, c, length = x.shape
        g, gp = self.groups, self.gp
        q, k, v = self.bn_qkv(self.qkv(x)).view(n, g, 2 * gp, length).split((gp // 2, gp // 2, gp), 2)
        pos = torch.arange(length, device=x.device)
        offsets = (pos[:, None] - pos).clamp(1 - self.span, self.span - 1) + self.span - 1  # i - j, centred
        rq, rk, rv = self.rel[:, offsets].split((gp // 2, gp // 2, gp))  # (channels, L_i, L_j)
        qk = q.transpose(2, 3) @ k
        qr = self.per_position(q, rq)  # (N, G, L_i, L_j): q_i . Rq[i - j]
        kr = self.per_position(k, rk).transpose(2, 3)  # k_j . Rk[j - i]
        logits = self.bn_logits(torch.cat((qk, qr, kr), 1)).view(n, 3, g, length, length).sum(1)
        attn = logits.softmax(3)
        sv = v @ attn.transpose(2, 3)  # (N, G, gp, L_i)
        sve = (attn.permute(2, 0, 1, 3).flatten(1, 2) @ rv.permute(1, 2, 0)).view(length, n, g, gp).permute(1, 2, 3, 0)
        out = self.bn_out(torch.stack((sv, sve), 3).reshape(n, 2 * c, length))  # channels interleaved: sv, sve
        return out.view(n, c, 2, length).sum(2)

    @staticmethod
    def per_position(t, r):
        """out[n, g, i, j] = sum_c t[n, g, c, i] r[c, i, j], batched over positions i."""
        n, g, d, length = t.shape
        out = t.permute(3, 0, 1, 2).reshape(length, n * g, d) @ r.transpose(0, 1)  # (L_i, N*G, L_j)
        return out.view(length, n, g, length).permute(1, 2, 0, 3)


@register("AxialAttention", channels=Channels.KEEP, placement=P5_OUTPUT)
class AxialAttention(nn.Module):
    """Position-sensitive axial attention (Wang et al., ECCV 2020, Axial-DeepLab: Stand-Alone Axial-Attention).

    axial-deeplab's AxialBlock: ReLU(x + BN(PW(ReLU(width(height(ReLU(BN(PW(x))))))))) with width C / 2 (expansion
    2), the last BN's gamma zero at init. span: the longest axis the relative tables hold (axial-deeplab's
    kernel_size, which must equal the map side there); 64 covers P5 up to a 2048-pixel side, and longer axes clamp
    their offsets to it. groups 4 (axial-deeplab: 8) so that C = 16 still gives an even group width. Placement:
    the yoloair port puts its axial transformer on the P5 map Detect reads. Not the Ho et al. / lucidrains
    AxialAttention (plain multi-head attention per axis, summed).
    """

    def __init__(self, c1, c2, groups=4, span=64):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"groups": groups, "span": span})
        c_ = c1 // 2
        if c_ % (2 * groups):
            raise ValueError(f"AxialAttention: c1 / 2 ({c_}) must be a multiple of 2 * groups ({2 * groups})")
        self.down = nn.Sequential(nn.Conv2d(c1, c_, 1, bias=False), nn.BatchNorm2d(c_), nn.ReLU())
        self.height = AxialLayer(c_, groups, span)
        self.width = AxialLayer(c_, groups, span)
        self.relu = nn.ReLU()
        self.up = nn.Sequential(nn.Conv2d(c_, c1, 1, bias=False), nn.BatchNorm2d(c1))
        nn.init.zeros_(self.up[1].weight)

    def forward(self, x):
        y = self.down(x)
        b, c, h, w = y.shape
        y = self.height(y.permute(0, 3, 1, 2).reshape(b * w, c, h)).view(b, w, c, h).permute(0, 2, 3, 1)
        y = self.width(y.permute(0, 2, 1, 3).reshape(b * h, c, w)).view(b, h, c, w).permute(0, 2, 1, 3)
        return self.relu(x + self.up(self.relu(y)))
