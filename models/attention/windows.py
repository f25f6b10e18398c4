"""Window attention: BiLevelRoutingAttention (BiFormer), HaloAttention (HaloNet), CloAttention (CloFormer), and the
window helpers they share.

All keep the shape: (B, C, H, W) -> (B, C, H, W), on any H x W (the window rules pad and crop, see each block).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import check_args
from models.common import Conv
from models.placement import AFTER_LAST_TWO_C3, BEFORE_SPPF
from models.registry import Channels, register


def pad_to_multiple(x, mh, mw):
    """Zero-pad (B, C, H, W) at the bottom and right so that H and W become multiples of mh and mw."""
    h, w = x.shape[2:]
    return F.pad(x, (0, -w % mw, 0, -h % mh))


def window_means(x, ws):
    """Average pooling over ws x ws windows in which the windows at the bottom and right may be partial.

    A partial window averages only the pixels it holds; on multiples of ws this is AvgPool2d(ws, ws).
    """
    h, w = x.shape[2:]
    total = F.avg_pool2d(pad_to_multiple(x, ws, ws), ws)
    count = F.avg_pool2d(pad_to_multiple(x.new_ones(1, 1, h, w), ws, ws), ws)  # fraction of real pixels
    return total / count


def to_windows(x, n):
    """(B, C, n*h, n*w) -> (B, n*n, h*w, C): windows in row-major order, tokens row-major inside each window."""
    c, hp, wp = x.shape[1:]
    return x.view(-1, c, n, hp // n, n, wp // n).permute(0, 2, 4, 3, 5, 1).reshape(-1, n * n, hp * wp // n**2, c)


def from_windows(t, n, hp, wp):
    """The inverse of to_windows: (B, n*n, h*w, C) -> (B, C, hp, wp)."""
    c = t.shape[-1]
    return t.view(-1, n, n, hp // n, wp // n, c).permute(0, 5, 1, 3, 2, 4).reshape(-1, c, hp, wp)


def multi_head(q, k, v, heads):
    """softmax(q k^T) v per head, heads splitting the last axis head-major; q (..., Nq, C), k and v (..., Nk, C)."""
    split = lambda t: t.reshape(*t.shape[:-1], heads, t.shape[-1] // heads).transpose(-2, -3)  # (..., heads, N, d)
    attn = (split(q) @ split(k).transpose(-1, -2)).softmax(-1)
    return (attn @ split(v)).transpose(-2, -3).flatten(-2)


@register("BiLevelRoutingAttention", "BiFormer", "BRA", channels=Channels.KEEP, placement=BEFORE_SPPF)
class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention (Zhu et al., CVPR 2023, BiFormer: Vision Transformer with Bi-Level Routing Attention).

    The legacy module of BiFormer's detection models (auto_pad, identity kv downsampling, no routing parameters):
    the input is zero-padded at the bottom/right to multiples of n_win before the q|k|v projection and the output is
    cropped back. Each of the n_win^2 windows routes to the topk windows whose mean key best matches its mean query
    (no gradient through the choice), and its tokens attend to all tokens of those windows; a depthwise conv of v
    (LePE) is added before the output projection. As the official code, both scales are C^-1/2, not head_dim^-1/2.
    Used bare, as the YOLO ports use it (BiFormer wraps it in a pre-norm transformer block). n_win 5 (the ports: 7)
    divides P5 at 640, 480 and 320 without padding; side_dwconv 5 as BiFormer's models (the class default: 3).
    Routing is a discrete choice: in FP16 or bfloat16 a near-tie may pick another window than in float32 (measured
    on fresh blocks, 20x13 maps, 40 seeds: FP16 and bfloat16 outputs within 2.4e-3 of max(|y|, 1) of float32).
    """

    def __init__(self, c1, c2, num_heads=8, n_win=5, topk=4, side_dwconv=5):
        super().__init__()
        ints = {"num_heads": num_heads, "n_win": n_win, "topk": topk, "side_dwconv": side_dwconv}
        check_args(self, keep=(c1, c2), ints=ints, divisible=[("channels", c1, "num_heads", num_heads)])
        if topk > n_win**2:
            raise ValueError(f"BiLevelRoutingAttention: topk ({topk}) must be <= n_win^2 ({n_win**2})")
        if side_dwconv % 2 == 0:
            raise ValueError(
                f"BiLevelRoutingAttention: side_dwconv must be odd to keep the map size, got {side_dwconv}"
            )
        self.heads, self.n_win, self.topk, self.scale = num_heads, n_win, topk, c1**-0.5
        self.qkv = nn.Conv2d(c1, 3 * c1, 1)  # the per-token Linear(C, 3C) of the official NHWC code
        self.lepe = nn.Conv2d(c1, c1, side_dwconv, padding=side_dwconv // 2, groups=c1)
        self.proj = nn.Conv2d(c1, c1, 1)
        for linear in (self.qkv, self.proj):  # BiFormer's init of its Linear layers
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x):
        h, w = x.shape[2:]
        n = self.n_win
        q, k, v = self.qkv(pad_to_multiple(x, n, n)).chunk(3, 1)
        hp, wp = q.shape[2:]
        qw, kw, vw = to_windows(q, n), to_windows(k, n), to_windows(v, n)  # (B, P, h*w, C)
        kv = self.gather(torch.cat((kw, vw), -1), self.route(qw, kw))  # (B, P, topk*h*w, 2C)
        out = multi_head(qw * self.scale, *kv.chunk(2, -1), self.heads)
        return self.proj(from_windows(out, n, hp, wp) + self.lepe(v))[:, :, :h, :w]

    def route(self, qw, kw):
        """(B, P, topk) indices of the windows each window attends to, best first."""
        qr, kr = qw.detach().mean(2), kw.detach().mean(2)  # region descriptors, (B, P, C)
        return ((qr * self.scale) @ kr.transpose(1, 2)).topk(self.topk, -1).indices

    @staticmethod
    def gather(t, idx):
        """Tokens of the routed windows: t (B, P, T, C), idx (B, P, k) -> (B, P, k*T, C)."""
        p, n_tok, c = t.shape[1:]
        routed = idx[..., None, None].expand(-1, -1, -1, n_tok, c)
        return torch.gather(t.unsqueeze(1).expand(-1, p, -1, -1, -1), 2, routed).flatten(2, 3)


class HaloAttn(nn.Module):
    """timm's HaloAttn at stride 1: each block_size^2 block of queries attends to its block plus a halo around it.

    Keys (u, v) of the (block + 2 halo)^2 window score scale * q.k + q.Rh[u - i] + q.Rw[v - j] for the query at (i, j)
    of the block (relative tables, offsets from -(win - 1)). Queries, keys and values have no bias, so the zero halo
    and the zero bottom/right padding to multiples of block_size (cropped after) are zero keys and values, as timm.
    """

    def __init__(self, c, num_heads, block_size, halo_size):
        super().__init__()
        self.heads, self.block, self.halo = num_heads, block_size, halo_size
        d = c // num_heads
        self.win, self.scale = block_size + 2 * halo_size, d**-0.5
        self.q = nn.Conv2d(c, c, 1, bias=False)
        self.kv = nn.Conv2d(c, 2 * c, 1, bias=False)  # per head: d key channels, then d value channels (timm's)
        self.rel_h = nn.Parameter(torch.zeros(2 * self.win - 1, d))
        self.rel_w = nn.Parameter(torch.zeros(2 * self.win - 1, d))
        nn.init.trunc_normal_(self.q.weight, std=c**-0.5)
        nn.init.trunc_normal_(self.kv.weight, std=c**-0.5)
        nn.init.trunc_normal_(self.rel_h, std=self.scale)
        nn.init.trunc_normal_(self.rel_w, std=self.scale)

    def forward(self, x):
        c, h, w = x.shape[1:]
        bs, win, m = self.block, self.win, self.heads
        x = pad_to_multiple(x, bs, bs)
        hp, wp = x.shape[2:]
        nh, nw = hp // bs, wp // bs
        q = self.q(x).view(-1, m, c // m, nh, bs, nw, bs).permute(0, 1, 3, 5, 4, 6, 2)  # (B, m, nh, nw, bs, bs, d)
        kv = F.unfold(self.kv(x), win, padding=self.halo, stride=bs)  # (B, 2C * win^2, blocks)
        k, v = kv.view(-1, m, 2 * c // m, win * win, nh, nw).permute(0, 1, 4, 5, 3, 2).chunk(2, -1)
        logits = (q.flatten(4, 5) * self.scale) @ k.transpose(-1, -2)  # (B, m, nh, nw, bs^2, win^2)
        logits = logits.view(-1, m, nh, nw, bs, bs, win, win) + self.rel_logits(q)
        attn = logits.flatten(-2).softmax(-1)
        out = (attn.flatten(4, 5) @ v).view(-1, m, nh, nw, bs, bs, c // m)
        return out.permute(0, 1, 6, 2, 4, 3, 5).reshape(-1, c, hp, wp)[:, :, :h, :w]

    def rel_logits(self, q):
        """q.Rh[u - i] + q.Rw[v - j] for q (..., bs_i, bs_j, d): (..., bs_i, bs_j, win_u, win_v)."""
        offsets = torch.arange(self.win, device=q.device) - torch.arange(self.block, device=q.device)[:, None]
        rh, rw = self.rel_h[offsets + self.win - 1], self.rel_w[offsets + self.win - 1]  # (bs, win, d)
        lh = q @ rh.transpose(1, 2)  # the table row of query row i for every key row u: (..., bs_i, bs_j, win_u)
        lw = (q.transpose(-2, -3) @ rw.transpose(1, 2)).transpose(-2, -3)  # (..., bs_i, bs_j, win_v)
        return lh[..., :, None] + lw[..., None, :]


@register("HaloAttention", channels=Channels.KEEP, placement=AFTER_LAST_TWO_C3)
class HaloAttention(nn.Module):
    """Blocked local self-attention with halos (Vaswani et al., CVPR 2021, Scaling Local Self-Attention, HaloNet).

    timm's HaloAttn (there is no official code) inside timm's SelfAttnBlock, the residual bottleneck HaloNet uses:
    SiLU(x + BN(PW(SiLU(BN(HaloAttn(Conv(x))))))), bottleneck width e * C, the last BN's gamma zero at init (timm's
    zero_init_last). Bare, the layer would replace the features instead of refining them. block_size 8, halo 3 as
    timm's halonets; any H x W: the layer's input is zero-padded to multiples of block_size and cropped back.
    """

    def __init__(self, c1, c2, num_heads=4, block_size=8, halo_size=3, e=0.25):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"num_heads": num_heads, "block_size": block_size, "halo_size": halo_size})
        c_ = int(c1 * e)
        if c_ < 1 or c_ % num_heads:
            raise ValueError(f"HaloAttention: the bottleneck width int(c1 * e) = {c_} must be a multiple of num_heads")
        self.cv1 = Conv(c1, c_, 1)
        self.attn = HaloAttn(c_, num_heads, block_size, halo_size)
        self.bn = nn.BatchNorm2d(c_)
        self.act = nn.SiLU()
        self.cv2 = Conv(c_, c1, 1, act=False)
        nn.init.zeros_(self.cv2.bn.weight)

    def forward(self, x):
        return self.act(x + self.cv2(self.act(self.bn(self.attn(self.cv1(x))))))


class CloLocal(nn.Module):
    """One high-frequency branch of CloFormer's attention: tanh(scale * mixer(q * k)) * v from a depthwise conv."""

    def __init__(self, c1, c, k, scale):
        super().__init__()
        self.scale = scale
        self.qkv = nn.Conv2d(c1, 3 * c, 1)
        self.dw = nn.Conv2d(3 * c, 3 * c, k, padding=k // 2, groups=3 * c)
        self.mixer = nn.Sequential(nn.Conv2d(c, c, 1), nn.SiLU(), nn.Conv2d(c, c, 1))  # AttnMap

    def forward(self, x):
        q, k, v = self.dw(self.qkv(x)).chunk(3, 1)
        return torch.tanh(self.scale * self.mixer(q * k)) * v


@register("CloAttention", channels=Channels.KEEP, placement=BEFORE_SPPF)
class CloAttention(nn.Module):
    """CloFormer's EfficientAttention (Fan et al., 2023, Rethinking Local Perception in Lightweight Vision Transformer).

    group_split[:-1] heads go to the local (high-frequency) branches with kernel_sizes, group_split[-1] heads to the
    global branch, whose keys and values come from window_size x window_size average pooling. Defaults as the YOLO
    port (8 heads, split 4/4, kernel 5, window 4). The official code reshapes the pooled map to H*W // ws^2 tokens
    and fails when H or W is not a multiple of ws (issue #40 of the port); here partial windows at the bottom/right
    average the pixels they hold (window_means), which equals the official pooling on multiples. Used bare, as the
    YOLO port (CloFormer wraps it in a GroupNorm pre-norm block with a conv FFN).
    """

    def __init__(self, c1, c2, num_heads=8, group_split=(4, 4), kernel_sizes=(5,), window_size=4):
        super().__init__()
        ints = {"num_heads": num_heads, "window_size": window_size}
        ints |= {f"group_split[{i}]": g for i, g in enumerate(group_split)}
        ints |= {f"kernel_sizes[{i}]": k for i, k in enumerate(kernel_sizes)}
        check_args(self, keep=(c1, c2), ints=ints, divisible=[("channels", c1, "num_heads", num_heads)])
        if sum(group_split) != num_heads or len(group_split) != len(kernel_sizes) + 1:
            raise ValueError(
                f"CloAttention: group_split {tuple(group_split)} must sum to num_heads ({num_heads}) and hold one "
                f"more entry than kernel_sizes {tuple(kernel_sizes)} (the last: the global heads)"
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"CloAttention: kernel_sizes must be odd to keep the map size, got {tuple(kernel_sizes)}")
        dh = c1 // num_heads
        self.global_heads, self.ws, self.scale = group_split[-1], window_size, dh**-0.5
        self.local = nn.ModuleList(CloLocal(c1, g * dh, k, self.scale) for g, k in zip(group_split, kernel_sizes))
        self.q = nn.Conv2d(c1, group_split[-1] * dh, 1)
        self.kv = nn.Conv2d(c1, 2 * group_split[-1] * dh, 1)
        self.proj = nn.Conv2d(c1, c1, 1)

    def forward(self, x):
        return self.proj(torch.cat([branch(x) for branch in self.local] + [self.global_branch(x)], 1))

    def global_branch(self, x):
        """Every pixel attends to the window-pooled map: (B, C, H, W) -> (B, C_global, H, W)."""
        q = self.q(x)
        k, v = self.kv(window_means(x, self.ws)).flatten(2).transpose(1, 2).chunk(2, -1)  # (B, pooled, C_global)
        out = multi_head(q.flatten(2).transpose(1, 2) * self.scale, k, v, self.global_heads)
        return out.transpose(1, 2).reshape(q.shape)
