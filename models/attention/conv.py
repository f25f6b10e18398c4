"""Attention inside convolutions: SKAttention (keeps channels); SCConv, SplitAttn, DynamicConv (Conv replacements).

The conv replacements take `Conv`'s arguments (c1, c2, k, s, ...) and map (B, c1, H, W) -> (B, c2, ceil(H / s),
ceil(W / s)) for odd kernels. Their attention MLPs act on pooled (B, C, 1, 1) vectors and carry no BatchNorm (the
papers put one there), because BatchNorm over one value per channel cannot train at batch size 1.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import check_args, excite_mlp, reduced_channels
from models.common import Conv, autopad
from models.placement import BEFORE_SPPF, HEAD_1X1_CONVS
from models.registry import Channels, register


@register("SKAttention", "SKConv", "SK", channels=Channels.KEEP, placement=BEFORE_SPPF)
class SKAttention(nn.Module):
    """Selective Kernel convolution (Li et al., CVPR 2019, Selective Kernel Networks)."""

    def __init__(self, c1, c2, reduction=16, min_channels=32, branches=2, g=1):
        super().__init__()
        ints = {"reduction": reduction, "min_channels": min_channels, "branches": branches, "g": g}
        check_args(self, keep=(c1, c2), ints=ints, divisible=[("channels", c1, "groups g", g)])
        # branch i: 3x3 conv with dilation i + 1, the receptive field of a (2i + 3) x (2i + 3) kernel
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c1, c1, 3, padding=i + 1, dilation=i + 1, groups=g, bias=False),
                nn.BatchNorm2d(c1),
                nn.ReLU(inplace=True),
            )
            for i in range(branches)
        )
        self.fc = excite_mlp(c1, reduced_channels(c1, reduction, min_channels), c1 * branches)
        self.m = branches

    def forward(self, x):
        feats = torch.stack([branch(x) for branch in self.branches], 1)  # (B, M, C, H, W)
        s = feats.sum(1).mean((2, 3), keepdim=True)  # fuse: global average of U = sum of the branches
        a = self.fc(s).reshape(-1, self.m, x.shape[1], 1, 1).softmax(dim=1)  # select: softmax across branches
        return (feats * a).sum(1)


@register("SCConv", channels=Channels.CONV, placement=BEFORE_SPPF.with_args(3, 1))
class SCConv(nn.Module):
    """Self-calibrated convolution (Liu et al., CVPR 2020, Improving CNNs with Self-Calibrated Convolutions).

    As SCNet's code, avgpool_r floors (a 10x10 map pools to 2x2 at pool_rate 4); on a map smaller than pool_rate the
    window shrinks to the map (SCNet fails there). K2 has no BatchNorm (SCNet has one, a per-channel affine map in
    eval mode): the pooled map can be 1x1, where BatchNorm cannot train at batch size 1. SiLU as in Conv.
    """

    def __init__(self, c1, c2, k=3, s=1, pool_rate=4):
        super().__init__()
        check_args(self, ints={"c1": c1, "c2": c2, "k": k, "s": s, "pool_rate": pool_rate})
        if c1 < 2 or c2 < 2:
            raise ValueError(f"SCConv splits channels in halves: c1 and c2 must be >= 2, got {c1}, {c2}")
        a1, a2 = c1 // 2, c2 // 2  # self-calibrated half; the other half is a plain conv
        self.split, self.pool_rate = a1, pool_rate
        self.k1 = Conv(c1 - a1, c2 - a2, k, s)
        self.k2 = nn.Conv2d(a1, a1, k, padding=autopad(k))  # no BN: the pooled map may be 1x1 at batch size 1
        self.k3 = Conv(a1, a1, k, act=False)
        self.k4 = Conv(a1, a2, k, s)

    def forward(self, x):
        x1, x2 = x[:, : self.split], x[:, self.split :]
        return torch.cat((self.k4(self.calibrate(x1)), self.k1(x2)), 1)

    def calibrate(self, x):
        """sigmoid(x + up(K2(avgpool_r(x)))) * K3(x): K3 responses gated by a coarse, wider view of x."""
        # ints: an export traces the window as constants (pool_rate on any map of at least pool_rate pixels)
        window = (min(self.pool_rate, int(x.shape[2])), min(self.pool_rate, int(x.shape[3])))
        coarse = self.k2(F.avg_pool2d(x, window, window))
        return torch.sigmoid(x + F.interpolate(coarse, size=x.shape[2:], mode="nearest")) * self.k3(x)


@register("SplitAttn", "ResNeSt", channels=Channels.CONV, placement=BEFORE_SPPF.with_args(3, 1))
class SplitAttn(nn.Module):
    """Split attention convolution (Zhang et al., 2020, ResNeSt: Split-Attention Networks).

    As ResNeSt's SplAtConv2d, with Conv's SiLU after the grouped conv where ResNeSt has ReLU.
    """

    def __init__(self, c1, c2, k=3, s=1, g=1, radix=2, reduction=4, min_channels=32):
        super().__init__()
        ints = dict(c1=c1, c2=c2, k=k, s=s, g=g, radix=radix, reduction=reduction, min_channels=min_channels)
        divisible = [("c1", c1, "g * radix", g * radix), ("c2", c2, "cardinality g", g)]
        check_args(self, ints=ints, divisible=divisible)
        self.c2, self.g, self.radix = c2, g, radix
        self.conv = Conv(c1, c2 * radix, k, s, g=g * radix)
        c_ = -(-reduced_channels(c1 * radix, reduction, min_channels) // g) * g  # a multiple of the cardinality
        self.fc = excite_mlp(c2, c_, c2 * radix, groups=g)

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


@register("DynamicConv", "Dynamic_conv2d", channels=Channels.CONV, placement=HEAD_1X1_CONVS)
class DynamicConv(nn.Module):
    """Dynamic convolution with BN and SiLU like Conv (Chen et al., CVPR 2020, Attention over Convolution Kernels).

    The softmax temperature anneals linearly from `temperature` (30) to 1 over the first min(temp_epochs, epochs)
    epochs of a run (the paper: the first 10), so that the last of them, and every later one, trains at 1; train.py
    calls `epoch_update(epoch, epochs)` each epoch. The seed defines an update that nothing calls.
    """

    def __init__(
        self, c1, c2, k=1, s=1, p=None, g=1, act=True, K=4, reduction=4, min_channels=1, temperature=30, temp_epochs=10
    ):
        super().__init__()
        ints = dict(
            c1=c1, c2=c2, k=k, s=s, g=g, K=K, reduction=reduction, min_channels=min_channels, temp_epochs=temp_epochs
        )
        divisible = [("c1", c1, "groups g", g), ("c2", c2, "groups g", g)]
        check_args(self, ints=ints, numbers={"temperature": temperature}, divisible=divisible)
        self.c1, self.c2, self.k, self.s, self.p, self.g, self.K = c1, c2, k, s, autopad(k, p), g, K
        self.t0, self.temp_epochs = float(temperature), temp_epochs
        self.temperature = float(temperature)  # a plain float: survives pickling, deepcopy and .half()
        c_ = reduced_channels(c1, reduction, min_channels)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), excite_mlp(c1, c_, K))
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

    def state_from(self, layer, tensors):
        """This layer's tensors from a replaced `Conv` of the same shape: its kernel in every expert, its BatchNorm.

        Any softmax over identical kernels mixes back to that kernel, so the transferred model starts at the
        pretrained one's output; only the attention MLP is new. Returns {} for any other layer.
        """
        w = tensors.get("conv.weight")
        if layer != "Conv" or w is None or w.shape != self.weight.shape[1:]:
            return {}
        state = {"weight": w.expand_as(self.weight).clone()}
        return state | {k: v for k, v in tensors.items() if k.startswith("bn.")}

    def epoch_update(self, epoch, epochs):
        """Per-epoch hook: tau goes linearly from its start at epoch 0 to 1 at epoch min(temp_epochs, epochs) - 1."""
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"DynamicConv.epoch_update: needs ints epoch >= 0, epochs >= 1, got {epoch!r}, {epochs!r}")
        last = min(self.temp_epochs, epochs) - 1
        progress = min(epoch / last, 1.0) if last > 0 else 1.0
        self.temperature = self.t0 + (1.0 - self.t0) * progress
        return {"temperature": self.temperature}
