"""YOLO-FaceV2's occlusion-aware channel attention: SEAM and MultiSEAM. Both keep the shape (B, C, H, W)."""

import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import BatchNormB1, check_args, excite_mlp, reduced_channels
from models.placement import DETECT_INPUTS
from models.registry import Channels, register


class MixerStage(nn.Module):
    """One depthwise-separable stage of YOLO-FaceV2: z + BN(GELU(DW(z))), then BN(GELU(PW(.))) (GELU before BN)."""

    def __init__(self, c, k=3):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c), nn.GELU(), BatchNormB1(c))
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), BatchNormB1(c))

    def forward(self, x):
        return self.pw(x + self.dw(x))


@register("SEAM", channels=Channels.KEEP, placement=DETECT_INPUTS.with_args(1, 8))
class SEAM(nn.Module):
    """Separated and Enhancement Attention Module (Yu et al., 2022, YOLO-FaceV2).

    Official math: n depthwise-separable stages, global average, bias-free FC-ReLU-FC-sigmoid, output x * exp(a).
    Placed as the official yaml: on each neck output feeding Detect, with n=1, reduction=8. Its BatchNorms follow the
    BN-B1 rule (running statistics when training on one value per channel).
    """

    def __init__(self, c1, c2, n=1, reduction=16, min_channels=1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"n": n, "reduction": reduction, "min_channels": min_channels})
        self.mixer = nn.Sequential(*(MixerStage(c1) for _ in range(n)))
        self.excite = excite_mlp(c1, reduced_channels(c1, reduction, min_channels), bias=False)

    def forward(self, x):
        return x * self.excite(self.mixer(x).mean((2, 3), keepdim=True)).sigmoid().exp()


@register("MultiSEAM", channels=Channels.KEEP, placement=DETECT_INPUTS.with_args(1, 3, [6, 7, 8], 16))
class MultiSEAM(nn.Module):
    """Multi-patch SEAM (Yu et al., 2022, YOLO-FaceV2).

    Official math: per patch size p a full p x p conv with stride p (no padding) then `depth` SEAM stages, each branch
    and the input globally averaged, the four averages' mean through SEAM's excitation, output x * exp(a). A map
    smaller than a patch is zero-padded right/bottom up to one patch (the official code fails there); otherwise equal
    to official. The depthwise conv pads kernel_size // 2 (official: 1, so only 3 worked). BN-B1 rule as SEAM.
    Parameter cost: the patch convs hold C^2 * sum(p^2) weights, 83 C^2 for the class default (3, 5, 7) and 149 C^2
    for the official yaml's (6, 7, 8) used by its placement (C=256: 5.4M and 9.8M parameters).
    """

    def __init__(self, c1, c2, depth=1, kernel_size=3, patch_size=(3, 5, 7), reduction=16, min_channels=1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"depth": depth, "kernel_size": kernel_size, "reduction": reduction})
        check_args(self, ints={"min_channels": min_channels, **{f"patch {p}": p for p in patch_size}})
        if kernel_size % 2 == 0:
            raise ValueError(f"MultiSEAM: kernel_size must be odd to keep the residual's size, got {kernel_size}")
        self.patches = tuple(patch_size)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c1, c1, p, p),
                nn.GELU(),
                BatchNormB1(c1),
                *(MixerStage(c1, kernel_size) for _ in range(depth)),
            )
            for p in self.patches
        )
        self.excite = excite_mlp(c1, reduced_channels(c1, reduction, min_channels), bias=False)

    def forward(self, x):
        h, w = x.shape[2:]
        y = x.mean((2, 3), keepdim=True)
        for p, branch in zip(self.patches, self.branches):
            y = y + branch(F.pad(x, (0, max(p - w, 0), 0, max(p - h, 0)))).mean((2, 3), keepdim=True)
        return x * self.excite(y / (len(self.patches) + 1)).sigmoid().exp()
