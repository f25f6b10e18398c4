"""Vision-transformer blocks on the P5 map: MobileViTAttention (MobileViT), DeformableAttention (DAT).

Both keep the shape: (B, C, H, W) -> (B, C, H, W), on any H x W.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import check_args
from models.attention.windows import multi_head
from models.common import Conv
from models.placement import BEFORE_SPPF
from models.registry import Channels, register


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on (..., N, d) tokens: t + MHSA(LN(t)), then t + MLP(LN(t)) with SiLU (timm's)."""

    def __init__(self, d, heads, mlp_ratio):
        super().__init__()
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)  # [q | k | v], each head-major
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, int(d * mlp_ratio)), nn.SiLU(), nn.Linear(int(d * mlp_ratio), d))

    def forward(self, t):
        qkv, d = self.qkv(self.norm1(t)), t.shape[-1]
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]  # slices: the dynamo export's Split fails
        t = t + self.proj(multi_head(q * self.scale, k, v, self.heads))
        return t + self.mlp(self.norm2(t))


@register("MobileViTAttention", "MobileViT", channels=Channels.KEEP, placement=BEFORE_SPPF)
class MobileViTAttention(nn.Module):
    """MobileViT block (Mehta & Rastegari, ICLR 2022, MobileViT: Light-weight, General-purpose, and Mobile-friendly).

    timm's MobileVitBlock (the ml-cvnets one) with SiLU: Conv 3x3, PW to d, unfold into patch x patch patches, a
    transformer over the pixels at the same offset in every patch (depth layers, final LayerNorm), fold, Conv 1x1
    back to C, then Conv 3x3 over cat(x, that). A side that is not a multiple of patch is resized up to one
    (bilinear, align_corners=False) before the unfold and back after the fold, as the official code. d defaults to
    C, patch 2, depth 2, 4 heads (the paper's). Linear layers N(0, 0.01) as timm, convs PyTorch's default. Not the
    External-Attention port of this name (no norms or activations, patch 7). Placement: the paper's 1/32 stage.
    """

    def __init__(self, c1, c2, d=None, depth=2, patch=2, num_heads=4, mlp_ratio=2.0, k=3):
        super().__init__()
        d = c1 if d is None else d
        ints = {"d": d, "depth": depth, "patch": patch, "num_heads": num_heads, "k": k}
        check_args(self, keep=(c1, c2), ints=ints, numbers={"mlp_ratio": mlp_ratio})
        check_args(self, divisible=[("d", d, "num_heads", num_heads)])
        self.patch = patch
        self.cv1 = Conv(c1, c1, k)
        self.pw = nn.Conv2d(c1, d, 1, bias=False)
        self.layers = nn.Sequential(*(TransformerLayer(d, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(d)
        self.cv2 = Conv(d, c1, 1)
        self.cv3 = Conv(2 * c1, c1, k)
        for m in self.layers.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        y = self.pw(self.cv1(x))
        d, h, w = (int(n) for n in y.shape[1:])  # ints: an export resizes to constant sizes (dynamic ones misalign)
        p = self.patch
        hp, wp = -(-h // p) * p, -(-w // p) * p
        if (hp, wp) != (h, w):
            y = F.interpolate(y, size=(hp, wp), mode="bilinear", align_corners=False)
        # (B, d, nh*p, nw*p) -> (B, p, p, nh*nw, d): one sequence per in-patch offset
        t = y.view(-1, d, hp // p, p, wp // p, p).permute(0, 3, 5, 2, 4, 1).reshape(-1, p, p, hp * wp // p**2, d)
        t = self.norm(self.layers(t))
        y = t.view(-1, p, p, hp // p, wp // p, d).permute(0, 5, 3, 1, 4, 2).reshape(-1, d, hp, wp)
        if (hp, wp) != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.cv3(torch.cat((x, self.cv2(y)), 1))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@register("DeformableAttention", "DAT", channels=Channels.KEEP, placement=BEFORE_SPPF, opset=16)
class DeformableAttention(nn.Module):
    """Deformable attention (Xia et al., CVPR 2022, Vision Transformer with Deformable Attention; DAT++ 2023).

    DAT's current release (DAttentionBaseline, DAT++) with the YOLO port's defaults: 8 heads, 4 offset groups,
    offset stride 1, offset range 4, offset kernel 3, a depthwise 3x3 of q added to the output (dwc_pe). The keys are
    the input bilinearly sampled (align_corners=True) at reference points plus learned offsets; references and offset
    ranges divide by Hk - 1 and Wk - 1 as the official code (half-pixel shifted), kept >= 1 so 1-pixel maps work.
    Used bare, as the port (DAT wraps it in a pre-norm transformer block). Global attention: P5 only.
    """

    def __init__(self, c1, c2, num_heads=8, groups=4, stride=1, offset_range=4.0, ksize=3):
        super().__init__()
        ints = {"num_heads": num_heads, "groups": groups, "stride": stride, "ksize": ksize}
        div = [("channels", c1, "num_heads", num_heads), ("channels", c1, "groups", groups)]
        check_args(self, keep=(c1, c2), ints=ints, numbers={"offset_range": offset_range}, divisible=div)
        check_args(self, divisible=[("num_heads", num_heads, "groups", groups)])
        cg = c1 // groups
        self.heads, self.groups, self.range, self.scale = num_heads, groups, offset_range, (c1 // num_heads) ** -0.5
        self.q = nn.Conv2d(c1, c1, 1)
        self.offset = nn.Sequential(  # shared by the groups: (B*G, C/G, H, W) -> (B*G, 2, Hk, Wk) as (dy, dx)
            nn.Conv2d(cg, cg, ksize, stride, 0 if ksize == stride else ksize // 2, groups=cg),
            ChannelNorm(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, bias=False),
        )
        self.k = nn.Conv2d(c1, c1, 1)
        self.v = nn.Conv2d(c1, c1, 1)
        self.pe = nn.Conv2d(c1, c1, 3, padding=1, groups=c1)
        self.proj = nn.Conv2d(c1, c1, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.q(x)
        xs = F.grid_sample(x.reshape(-1, c // self.groups, h, w), self.sample_points(q).to(x.dtype), align_corners=True)
        xs = xs.reshape(-1, c, 1, xs.shape[2] * xs.shape[3])
        k, v = self.k(xs).flatten(2).transpose(1, 2), self.v(xs).flatten(2).transpose(1, 2)  # (B, Hk*Wk, C)
        out = multi_head(q.flatten(2).transpose(1, 2) * self.scale, k, v, self.heads)
        return self.proj(out.transpose(1, 2).reshape(q.shape) + self.pe(q))

    def sample_points(self, q):
        """Normalised (x, y) key positions per group, (B*G, Hk, Wk, 2), in float32 at least (FP16 grids are coarse)."""
        c, h, w = q.shape[1:]
        off = self.offset(q.reshape(-1, c // self.groups, h, w))  # (B*G, 2, Hk, Wk) as (dy, dx)
        hk, wk = off.shape[2:]
        dt = torch.promote_types(q.dtype, torch.float32)
        ry = (torch.arange(hk, device=q.device, dtype=dt) + 0.5) / max(hk - 1, 1)
        rx = (torch.arange(wk, device=q.device, dtype=dt) + 0.5) / max(wk - 1, 1)
        ref = torch.stack(torch.meshgrid(2 * ry - 1, 2 * rx - 1, indexing="ij"))
        span = torch.tensor([self.range / max(hk - 1, 1), self.range / max(wk - 1, 1)], device=q.device, dtype=dt)
        pos = ref + off.to(dt).tanh() * span.view(2, 1, 1)
        return pos.flip(1).permute(0, 2, 3, 1)
