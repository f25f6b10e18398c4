"""Context blocks: GlobalContext (GCNet), CoTAttention (CoTNet) and ACmix, attention mixed with convolution."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import BatchNormB1, check_args, make_gate, reduced_channels
from models.attention.stable import reflect_pad
from models.placement import BEFORE_SPPF
from models.registry import Channels, register

FUSIONS = {"add": ("add",), "mul": ("mul",), "both": ("mul", "add")}


def _transform(c1, c_):
    """GCNet's bottleneck transform: 1x1 conv, LayerNorm over the c_ values, ReLU, 1x1 conv; the last conv is zero."""
    t = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.LayerNorm([c_, 1, 1]), nn.ReLU(), nn.Conv2d(c_, c1, 1))
    nn.init.zeros_(t[-1].weight)
    nn.init.zeros_(t[-1].bias)
    return t


@register("GlobalContext", "GCBlock", "ContextBlock", channels=Channels.KEEP, placement=BEFORE_SPPF)
class GlobalContext(nn.Module):
    """Global context block (Cao et al., ICCVW 2019, GCNet).

    As GCNet's ContextBlock: pooling 'att' (softmax-weighted sum over positions) or 'avg'; fusion 'add' (default,
    y = x + T(ctx): the identity at start), 'mul' (y = x * sigmoid(T(ctx))) or 'both' (mul first, then add).
    Bottleneck width c1 // reduction (GCNet's ratio 1/16).
    """

    def __init__(self, c1, c2, reduction=16, min_channels=1, pooling="att", fusion="add", gate="sigmoid"):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        if pooling not in ("att", "avg") or fusion not in FUSIONS:
            raise ValueError(f"GlobalContext: pooling att|avg, fusion add|mul|both, got {pooling!r}, {fusion!r}")
        c_ = reduced_channels(c1, reduction, min_channels)
        self.mask = nn.Conv2d(c1, 1, 1) if pooling == "att" else None
        if self.mask is not None:
            nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.mask.bias)
        self.mul = _transform(c1, c_) if "mul" in FUSIONS[fusion] else None
        self.add = _transform(c1, c_) if "add" in FUSIONS[fusion] else None
        self.act = make_gate(self, gate)

    def forward(self, x):
        ctx = self.context(x)
        y = x if self.mul is None else x * self.act(self.mul(ctx))
        return y if self.add is None else y + self.add(ctx)

    def context(self, x):
        """(B, C, H, W) -> (B, C, 1, 1): the mean, or the sum weighted by a softmax over positions."""
        if self.mask is None:
            return x.mean((2, 3), keepdim=True)
        a = self.mask(x).flatten(2).softmax(-1)  # (B, 1, N)
        return (x.flatten(2) @ a.transpose(1, 2)).unsqueeze(-1)


@register("CoTAttention", "CoT", channels=Channels.KEEP, placement=BEFORE_SPPF)
class CoTAttention(nn.Module):
    """Contextual Transformer block (Li et al., TPAMI 2022, Contextual Transformer Networks for Visual Recognition).

    As CoTNet's CotLayer: static keys K1 from a grouped kxk conv; per-position kxk weights from [x, K1] shared by
    channels c, c + C/8, c + 2C/8, ... (GroupNorm per weight group); K2 = SiLU(BN(local aggregation of the values,
    zero padded, no softmax)); y mixes K2 and K1 by a radix-2 softmax. Its BatchNorms normalise a batch-1 pooled
    vector with the running statistics (BatchNormB1), where CoTNet cannot train.
    """

    def __init__(self, c1, c2, k=3):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"k": k}, divisible=[("channels", c1, "8", 8)])
        if k % 2 == 0:
            raise ValueError(f"CoTAttention: k must be odd to keep the map size, got {k}")
        self.k = k
        c_, w_ = c1 // 2, k * k * c1 // 8
        self.key = nn.Sequential(nn.Conv2d(c1, c1, k, padding=k // 2, groups=4, bias=False), BatchNormB1(c1), nn.ReLU())
        self.embed = nn.Sequential(
            nn.Conv2d(2 * c1, c_, 1, bias=False),
            BatchNormB1(c_),
            nn.ReLU(),
            nn.Conv2d(c_, w_, 1),
            nn.GroupNorm(c1 // 8, w_),
        )
        self.value = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), BatchNormB1(c1))
        self.bn = BatchNormB1(c1)
        self.act = nn.SiLU()
        attn = max(c1 // 2, 32)
        self.se = nn.Sequential(nn.Conv2d(c1, attn, 1), BatchNormB1(attn), nn.ReLU(), nn.Conv2d(attn, 2 * c1, 1))

    def forward(self, x):
        k1 = self.key(x)
        k2 = self.act(self.bn(self.aggregate(self.value(x), self.embed(torch.cat((x, k1), 1)))))
        a = self.se((k2 + k1).mean((2, 3), keepdim=True)).reshape(-1, x.shape[1], 2, 1, 1).softmax(2)
        return k2 * a[:, :, 0] + k1 * a[:, :, 1]  # the radix logits interleave: channel 2c + r

    def aggregate(self, v, weights):
        """sum over taps j of weights[c mod C/8, j] * v_c shifted by tap j (zero padding): (B, C, H, W)."""
        c, h, w = v.shape[1:]
        k, p = self.k, self.k // 2
        weights = weights.reshape(-1, 1, c // 8, k * k, h, w)  # channel g * k^2 + j: weight group g, tap j
        vp = F.pad(v, (p, p, p, p)).reshape(-1, 8, c // 8, h + 2 * p, w + 2 * p)  # channel c = r * C/8 + g
        out = 0
        for j in range(k * k):
            out = out + weights[:, :, :, j] * vp[..., j // k : j // k + h, j % k : j % k + w]
        return out.reshape(v.shape)


def position_grid(h, w, like):
    """(1, 2, H, W) coordinates from -1 to 1 (-1 on a 1-pixel axis): channel 0 along W, channel 1 along H."""
    ys = torch.arange(h, device=like.device, dtype=like.dtype) * (2 / max(h - 1, 1)) - 1
    xs = torch.arange(w, device=like.device, dtype=like.dtype) * (2 / max(w - 1, 1)) - 1
    return torch.stack((xs.expand(h, w), ys[:, None].expand(h, w)))[None]


@register("ACmix", channels=Channels.CONV, placement=BEFORE_SPPF.with_args(3, 1))
class ACmix(nn.Module):
    """Self-attention and convolution mixed on shared 1x1 projections (Pan et al., CVPR 2022, ACmix).

    Arguments like Conv: (c1, c2, k, s) with k the conv path's kernel (ACmix: 3), then the attention window k_att and
    the heads. As ACmix's code: window attention with a relative position term, keys, values and positions
    reflection padded; rates 0.5 and 0.5; the conv path starts as shift-and-sum. Maps under k_att // 2 + 1 pixels a
    side (ACmix fails there) repeat the reflection (stable.reflect_index). Stride s keeps every s-th query of both
    paths: ceil(H / s) x ceil(W / s) outputs, where ACmix's code has H // s and breaks on odd sizes.
    """

    def __init__(self, c1, c2, k=3, s=1, k_att=7, head=4):
        super().__init__()
        ints = {"c1": c1, "c2": c2, "k": k, "s": s, "k_att": k_att, "head": head}
        check_args(self, ints=ints, divisible=[("c2", c2, "head", head)])
        if k % 2 == 0 or k_att % 2 == 0:
            raise ValueError(f"ACmix: k and k_att must be odd, got {k}, {k_att}")
        self.c2, self.k, self.s, self.k_att, self.head, self.d = c2, k, s, k_att, head, c2 // head
        self.qkv = nn.Conv2d(c1, 3 * c2, 1)
        self.conv_p = nn.Conv2d(2, self.d, 1)
        self.fc = nn.Conv2d(3 * head, k * k, 1, bias=False)
        self.dep_conv = nn.Conv2d(k * k * self.d, c2, k, s, k // 2, groups=self.d)
        self.rate1 = nn.Parameter(torch.full((1,), 0.5))
        self.rate2 = nn.Parameter(torch.full((1,), 0.5))
        shift = torch.zeros(k * k, k, k)
        for j in range(k * k):
            shift[j, j // k, j % k] = 1.0  # input j of each group moves by tap j
        with torch.no_grad():
            self.dep_conv.weight.copy_(shift.expand_as(self.dep_conv.weight))
        nn.init.zeros_(self.dep_conv.bias)

    def forward(self, x):
        h, w = x.shape[2:]
        qkv = self.qkv(x)
        return self.rate1 * self.attention(qkv, h, w) + self.rate2 * self.convolution(qkv, h, w)

    def attention(self, qkv, h, w):
        """Each (strided) query attends to its k_att x k_att window: (B, c2, ceil(H / s), ceil(W / s))."""
        s, n = self.s, self.k_att
        q, k, v = qkv.reshape(-1, 3, self.head, self.d, h, w).unbind(1)  # (B, heads, d, H, W)
        pe = self.conv_p(position_grid(h, w, qkv))
        q = q[..., ::s, ::s] * self.d**-0.5
        # logit_j(u) = q(u) . (k(u + j) + pe(u) - pe(u + j)); the q(u) . pe(u) term is the same for every tap j of u,
        # so it cancels in the softmax over taps
        kp, vp = reflect_pad(k - pe, n // 2), reflect_pad(v, n // 2)
        taps = [(t // n, t % n) for t in range(n * n)]
        logits = torch.stack([(q * kp[..., i : i + h : s, j : j + w : s]).sum(2) for i, j in taps], 2)
        a = logits.softmax(2)  # (B, heads, taps, H / s, W / s)
        out = 0
        for t, (i, j) in enumerate(taps):
            out = out + a[:, :, t, None] * vp[..., i : i + h : s, j : j + w : s]
        return out.reshape(-1, self.c2, *out.shape[-2:])

    def convolution(self, qkv, h, w):
        """The 3 heads x 3 projections mixed into k^2 maps per head channel, then the grouped kxk conv."""
        f = self.fc(qkv.reshape(-1, 3 * self.head, self.d, h * w))  # (B, k^2, d, N)
        return self.dep_conv(f.transpose(1, 2).reshape(-1, self.k * self.k * self.d, h, w))
