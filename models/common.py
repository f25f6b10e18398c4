"""YOLOv5 v6.1 building blocks; every registered block is importable from here (`from models.common import SOCA`)."""

import math

import torch
import torch.nn as nn

from models.registry import REGISTRY, Channels, add, build_block, register

# torch.nn modules that v6.1 yamls name directly
add(nn.Upsample, "nn.Upsample", channels=Channels.SAME)
add(nn.MaxPool2d, "nn.MaxPool2d", channels=Channels.SAME)
add(nn.Identity, "nn.Identity", channels=Channels.SAME)
add(nn.BatchNorm2d, "nn.BatchNorm2d", channels=Channels.NORM)
add(nn.ZeroPad2d, "nn.ZeroPad2d", channels=Channels.SAME)


def autopad(k, p=None):
    """'Same' padding for kernel k (int or list) unless p is given."""
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


@register("Conv", channels=Channels.CONV)
class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU, the YOLOv5 standard convolution."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


@register("DWConv", channels=Channels.CONV)
class DWConv(Conv):
    """Depth-wise convolution: Conv with groups = gcd(c1, c2)."""

    def __init__(self, c1, c2, k=1, s=1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act)


@register("Bottleneck", channels=Channels.CONV)
class Bottleneck(nn.Module):
    """Standard bottleneck: 1x1 then 3x3 Conv with an optional residual (He et al., 2016)."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register("BottleneckCSP", channels=Channels.REPEAT)
class BottleneckCSP(nn.Module):
    """CSP bottleneck (Wang et al., CVPR-W 2020, CSPNet)."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), 1))))


@register("C3", channels=Channels.REPEAT)
class C3(nn.Module):
    """CSP bottleneck with 3 convolutions (YOLOv5 v5.0+)."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = self.inner_stack(c_, n, shortcut, g)

    def inner_stack(self, c_, n, shortcut, g):
        """The n blocks on the cv1 branch; C3Ghost and C3TR swap in their own."""
        return nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class AttentionBottleneck(Bottleneck):
    """Bottleneck with a channel-keeping attention block on its 3x3 output, before the residual add (SE-ResNet)."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5, block="SE"):
        super().__init__(c1, c2, shortcut, g, e)
        self.attention = build_block(block, c2)

    def forward(self, x):
        y = self.attention(self.cv2(self.cv1(x)))
        return x + y if self.add else y


@register("C3Attention", channels=Channels.REPEAT)
class C3Attention(C3):
    """C3 whose bottlenecks each hold an attention block (the yaml name `C3SE` builds it with block='SE')."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, block="SE"):
        self.block = block
        super().__init__(c1, c2, n, shortcut, g, e)

    def inner_stack(self, c_, n, shortcut, g):
        return nn.Sequential(*(AttentionBottleneck(c_, c_, shortcut, g, 1.0, self.block) for _ in range(n)))

    def state_from(self, src_name, tensors):
        """A C3's tensors, all of which this module has under the same names (the blocks inside start new)."""
        return dict(tensors) if src_name == "C3" else {}


def _check_pool_kernels(k):
    for x in k:
        if not isinstance(x, int) or x < 1 or x % 2 == 0:
            raise ValueError(f"pooling kernel must be a positive odd int so the map keeps its size, got {x!r}")


@register("SPP", channels=Channels.CONV)
class SPP(nn.Module):
    """Spatial pyramid pooling (He et al., TPAMI 2015)."""

    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        _check_pool_kernels(k)
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


@register("SPPF", channels=Channels.CONV)
class SPPF(nn.Module):
    """Fast SPP: three chained k x k max-pools, equal to SPP(k=(5, 9, 13)) for k=5 (YOLOv5 v6.0)."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        _check_pool_kernels([k])
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


@register("Focus", channels=Channels.CONV)
class Focus(nn.Module):
    """Space-to-depth then Conv (YOLOv5 before v6.0)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x):
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


@register("Concat", channels=Channels.CONCAT)
class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


@register("C3SPP", channels=Channels.CONV)
class C3SPP(C3):
    """C3 with an SPP block in place of its bottlenecks (YOLOv5 v6.1 experiment).

    Signature as v6.1 for yaml compatibility: v6.1 ignores n, shortcut and g here, and so does this class.
    """

    def __init__(self, c1, c2, k=(5, 9, 13), n=1, shortcut=True, g=1, e=0.5):
        super().__init__(c1, c2, 0, shortcut, g, e)
        self.m = SPP(int(c2 * e), int(c2 * e), k)


@register("GhostConv", channels=Channels.CONV)
class GhostConv(nn.Module):
    """Ghost module: a Conv to c2/2 maps plus their cheap 5x5 depth-wise 'ghosts' (Han et al., CVPR 2020)."""

    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"GhostConv: c2 must be even (half primary, half ghost maps), got {c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act)

    def forward(self, x):
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


@register("GhostBottleneck", channels=Channels.CONV)
class GhostBottleneck(nn.Module):
    """Ghost bottleneck: Ghost module, depth-wise stride conv if s > 1, linear Ghost module, shortcut (GhostNet)."""

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s != 1 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        projected = s != 1 or c1 != c2  # the paper's depth-wise + point-wise shortcut where shapes change
        self.shortcut = (
            nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
            if projected
            else nn.Identity()
        )

    def forward(self, x):
        return self.conv(x) + self.shortcut(x)


@register("C3Ghost", channels=Channels.REPEAT)
class C3Ghost(C3):
    """C3 whose bottlenecks are Ghost bottlenecks (YOLOv5 v6.1 yolov5s-ghost)."""

    def inner_stack(self, c_, n, shortcut, g):
        return nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


class TransformerLayer(nn.Module):
    """Transformer encoder layer without LayerNorm: q/k/v linears, multi-head attention, 2-linear FFN, residuals."""

    def __init__(self, c, num_heads):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x):
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Vision-transformer stage on a feature map: optional 1x1 Conv, learned position embedding, encoder layers."""

    def __init__(self, c1, c2, num_heads, num_layers):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)  # position embedding learned from the features themselves
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        p = x.flatten(2).permute(2, 0, 1)  # (h*w, batch, c): one token per position
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, h, w)


@register("C3TR", channels=Channels.REPEAT)
class C3TR(C3):
    """C3 whose bottlenecks are a 4-head TransformerBlock of n layers (YOLOv5 v6.1 yolov5s-transformer)."""

    def inner_stack(self, c_, n, shortcut, g):
        return TransformerBlock(c_, c_, 4, n)


def _check_gain(block, gain):
    if not isinstance(gain, int) or isinstance(gain, bool) or gain < 1:
        raise ValueError(f"{block}: gain must be an int >= 1, got {gain!r}")


@register("Contract", channels=Channels.SPACE_TO_DEPTH)
class Contract(nn.Module):
    """Space-to-depth: (b, c, h, w) -> (b, c*g*g, h/g, w/g), channel (i*g + j)*c + k from pixel offset (i, j)."""

    def __init__(self, gain=2):
        super().__init__()
        _check_gain("Contract", gain)
        self.gain = gain

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.gain
        if h % s or w % s:
            raise ValueError(f"Contract: height and width {h}x{w} must be divisible by the gain {s}")
        x = x.view(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(b, c * s * s, h // s, w // s)


@register("Expand", channels=Channels.DEPTH_TO_SPACE)
class Expand(nn.Module):
    """Depth-to-space, the inverse of Contract: (b, c, h, w) -> (b, c/(g*g), h*g, w*g)."""

    def __init__(self, gain=2):
        super().__init__()
        _check_gain("Expand", gain)
        self.gain = gain

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.gain
        if c % (s * s):
            raise ValueError(f"Expand: channels {c} must be divisible by gain^2 = {s * s}")
        x = x.view(b, s, s, c // s**2, h, w).permute(0, 3, 4, 1, 5, 2).contiguous()
        return x.view(b, c // s**2, h * s, w * s)


def __getattr__(name):
    """Every registered block by its yaml name or alias (the registry is the list; nothing is kept here)."""
    entry = REGISTRY.get(name)
    if entry is None or "." in name:
        raise AttributeError(f"module 'models.common' has no attribute '{name}'")
    return entry.cls


def __dir__():
    return sorted(set(globals()) | {n for n in REGISTRY if "." not in n})
