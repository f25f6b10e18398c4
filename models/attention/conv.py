"""Attention inside convolutions: SKAttention (keeps channels); SCConv, SplitAttn, DynamicConv (Conv replacements).

The conv replacements map (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)) for odd kernels, like `Conv`.
Their attention MLPs act on pooled (B, C, 1, 1) vectors and carry no BatchNorm (the papers put one there), because
BatchNorm over one value per channel cannot train at batch size 1.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.checks import check_divisible, check_keep_channels, check_positive_int, check_positive_number
from models.common import Conv, autopad
from models.registry import Channels, register


def _attention_mlp(c1, c_, c2, groups=1):
    """Pooled (B, c1, 1, 1) -> (B, c2, 1, 1) logits through a ReLU bottleneck of c_ channels."""
    return nn.Sequential(
        nn.Conv2d(c1, c_, 1, groups=groups), nn.ReLU(inplace=True), nn.Conv2d(c_, c2, 1, groups=groups)
    )


@register("SKAttention", "SKConv", channels=Channels.KEEP)
class SKAttention(nn.Module):
    """Selective Kernel convolution (Li et al., CVPR 2019, Selective Kernel Networks)."""

    def __init__(self, c1, c2, branches=2, g=1, r=16, L=32):
        super().__init__()
        check_keep_channels("SKAttention", c1, c2)
        for name, v in (("branches", branches), ("g", g), ("r", r), ("L", L)):
            check_positive_int("SKAttention", name, v)
        check_divisible("SKAttention", "channels", c1, g, "groups g")
        # branch i: 3x3 conv with dilation i + 1, the receptive field of a (2i + 3) x (2i + 3) kernel
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c1, c1, 3, padding=i + 1, dilation=i + 1, groups=g, bias=False),
                nn.BatchNorm2d(c1),
                nn.ReLU(inplace=True),
            )
            for i in range(branches)
        )
        self.fc = _attention_mlp(c1, max(c1 // r, L), c1 * branches)
        self.m = branches

    def forward(self, x):
        feats = torch.stack([branch(x) for branch in self.branches], 1)  # (B, M, C, H, W)
        s = feats.sum(1).mean((2, 3), keepdim=True)  # fuse: global average of U = sum of the branches
        a = self.fc(s).reshape(-1, self.m, x.shape[1], 1, 1).softmax(dim=1)  # select: softmax across branches
        return (feats * a).sum(1)


@register("SCConv", channels=Channels.CONV)
class SCConv(nn.Module):
    """Self-calibrated convolution (Liu et al., CVPR 2020, Improving CNNs with Self-Calibrated Convolutions)."""

    def __init__(self, c1, c2, k=3, s=1, r=4):
        super().__init__()
        for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("r", r)):
            check_positive_int("SCConv", name, v)
        if c1 < 2 or c2 < 2:
            raise ValueError(f"SCConv splits channels in halves: c1 and c2 must be >= 2, got {c1}, {c2}")
        a1, a2 = c1 // 2, c2 // 2  # self-calibrated half; the other half is a plain conv
        self.split, self.r = a1, r
        self.k1 = Conv(c1 - a1, c2 - a2, k, s)
        self.k2 = nn.Conv2d(a1, a1, k, padding=autopad(k))  # no BN: the pooled map may be 1x1 at batch size 1
        self.k3 = Conv(a1, a1, k, act=False)
        self.k4 = Conv(a1, a2, k, s)

    def forward(self, x):
        x1, x2 = x[:, : self.split], x[:, self.split :]
        return torch.cat((self.k4(self.calibrate(x1)), self.k1(x2)), 1)

    def calibrate(self, x):
        """sigmoid(x + up(K2(avgpool_r(x)))) * K3(x): K3 responses gated by a coarse, wider view of x."""
        coarse = self.k2(F.avg_pool2d(x, self.r, self.r, ceil_mode=True))  # ceil: edge windows and maps < r count
        return torch.sigmoid(x + F.interpolate(coarse, size=x.shape[2:], mode="nearest")) * self.k3(x)


@register("SplitAttn", "ResNeSt", channels=Channels.CONV)
class SplitAttn(nn.Module):
    """Split attention convolution (Zhang et al., 2020, ResNeSt: Split-Attention Networks)."""

    def __init__(self, c1, c2, k=3, s=1, g=1, radix=2, r=4):
        super().__init__()
        for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g), ("radix", radix), ("r", r)):
            check_positive_int("SplitAttn", name, v)
        check_divisible("SplitAttn", "c1", c1, g * radix, "g * radix")
        check_divisible("SplitAttn", "c2", c2, g, "cardinality g")
        self.c2, self.g, self.radix = c2, g, radix
        self.conv = Conv(c1, c2 * radix, k, s, g=g * radix)
        c_ = -(-max(c1 * radix // r, 32) // g) * g  # bottleneck width, a multiple of the cardinality
        self.fc = _attention_mlp(c2, c_, c2 * radix, groups=g)

    def forward(self, x):
        splits = self.conv(x)
        h, w = splits.shape[2:]
        splits = splits.reshape(-1, self.radix, self.c2, h, w)  # split i is channels [i * c2, (i + 1) * c2)
        logits = self.fc(splits.sum(1).mean((2, 3), keepdim=True))  # laid out (cardinal group, radix, c2 / g)
        if self.radix > 1:
            a = logits.reshape(-1, self.g, self.radix, self.c2 // self.g).transpose(1, 2).softmax(dim=1)
        else:
            a = torch.sigmoid(logits)
        return (splits * a.reshape(-1, self.radix, self.c2, 1, 1)).sum(1)


@register("DynamicConv", "Dynamic_conv2d", channels=Channels.CONV)
class DynamicConv(nn.Module):
    """Dynamic convolution with BN and SiLU like Conv (Chen et al., CVPR 2020, Attention over Convolution Kernels)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True, K=4, r=4, temperature=30, temp_epochs=10):
        super().__init__()
        for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g), ("K", K), ("r", r)):
            check_positive_int("DynamicConv", name, v)
        check_positive_int("DynamicConv", "temp_epochs", temp_epochs)
        check_positive_number("DynamicConv", "temperature", temperature)
        check_divisible("DynamicConv", "c1", c1, g, "groups g")
        check_divisible("DynamicConv", "c2", c2, g, "groups g")
        self.c1, self.c2, self.k, self.s, self.p, self.g, self.K = c1, c2, k, s, autopad(k, p), g, K
        self.t0, self.temp_epochs = float(temperature), temp_epochs
        self.temperature = float(temperature)  # a plain float: survives pickling, deepcopy and .half()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), _attention_mlp(c1, max(c1 // r, 1), K))
        self.weight = nn.Parameter(torch.empty(K, c2, c1 // g, k, k))
        for w in self.weight:
            nn.init.kaiming_uniform_(w, a=5**0.5)  # each kernel initialised like an nn.Conv2d weight
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x):
        a = (self.attention(x).flatten(1) / self.temperature).softmax(1)  # (B, K) kernel attention
        y = self.mix_outputs(x, a) if torch.onnx.is_in_onnx_export() else self.mix_kernels(x, a)
        return self.act(self.bn(y))

    def mix_kernels(self, x, a):
        """Convolve each image with its own attention-weighted kernel: one conv with the batch as groups."""
        b, _, h, w = x.shape
        weight = (a @ self.weight.flatten(1)).reshape(-1, self.c1 // self.g, self.k, self.k)  # (B * c2, c1/g, k, k)
        y = F.conv2d(x.reshape(1, -1, h, w), weight, None, self.s, self.p, groups=b * self.g)
        return y.reshape(b, self.c2, *y.shape[2:])

    def mix_outputs(self, x, a):
        """mix_kernels' result by linearity (K convs, then their weighted sum): the ONNX graph keeps a dynamic batch."""
        g, K = self.g, self.K
        weight = self.weight.reshape(K, g, -1, *self.weight.shape[2:]).transpose(0, 1)  # output channels (g, K, c2/g)
        y = F.conv2d(x, weight.flatten(0, 2), None, self.s, self.p, groups=g)
        y = y.reshape(-1, g, K, self.c2 // g, *y.shape[2:]) * a.reshape(-1, 1, K, 1, 1, 1)
        return y.sum(2).flatten(1, 2)

    def epoch_update(self, epoch, epochs):
        """Per-epoch hook: anneal tau linearly from its start (30) at epoch 0 to 1 at epoch >= temp_epochs."""
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"DynamicConv.epoch_update: needs ints epoch >= 0, epochs >= 1, got {epoch!r}, {epochs!r}")
        self.temperature = self.t0 + (1.0 - self.t0) * min(epoch / self.temp_epochs, 1.0)
        return {"temperature": self.temperature}
