"""Large-kernel attention from decomposed depthwise convs: LSKA, LSKBlock, CAA. All keep the shape (B, C, H, W).

Convs use PyTorch's default init (as the YOLO peers using the bare modules); VAN and LSKNet initialise their whole
backbones with N(0, sqrt(2 / fan_out)) and zero biases instead.
"""

import torch
import torch.nn as nn

from models.attention.helpers import check_args
from models.placement import AFTER_LAST_TWO_C3, BEFORE_SPPF, DETECT_INPUTS
from models.registry import Channels, register

LSKA_KERNELS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}


def strip_conv(c, k, dilation=1, vertical=False):
    """Depthwise 1 x k (or k x 1) conv with bias and "same" zero padding."""
    pad = dilation * (k - 1) // 2
    return nn.Conv2d(
        c, c, (k, 1) if vertical else (1, k), padding=(pad, 0) if vertical else (0, pad), dilation=dilation, groups=c
    )


@register("LSKA", channels=Channels.KEEP, placement=BEFORE_SPPF)
class LSKA(nn.Module):
    """Large Separable Kernel Attention (Lau et al., ESWA 2023, LSKA).

    k_size picks the official decomposition (plain kernel k0, dilated kernel k1, dilation): 7 (3, 3, 2), 11 (3, 5, 2),
    23 (5, 7, 3), 35 (5, 11, 3), 41 (5, 13, 3), 53 (5, 17, 3). Default 7 (VAN's default, the YOLO peers' choice; the
    published backbones use 23). Output x * a with no sigmoid, as official. Placed at the end of the backbone, next
    to the peers' SPPF-LSKA.
    """

    def __init__(self, c1, c2, k_size=7):
        super().__init__()
        check_args(self, keep=(c1, c2))
        if k_size not in LSKA_KERNELS:
            raise ValueError(f"LSKA: k_size must be one of {', '.join(map(str, LSKA_KERNELS))}, got {k_size!r}")
        k0, k1, d = LSKA_KERNELS[k_size]
        self.attn = nn.Sequential(
            strip_conv(c1, k0),
            strip_conv(c1, k0, vertical=True),
            strip_conv(c1, k1, d),
            strip_conv(c1, k1, d, vertical=True),
            nn.Conv2d(c1, c1, 1),
        )

    def forward(self, x):
        return x * self.attn(x)


@register("LSKBlock", "LSK", "LSKblock", channels=Channels.KEEP, placement=AFTER_LAST_TWO_C3)
class LSKBlock(nn.Module):
    """Large Selective Kernel block (Li et al., ICCV 2023, LSKNet).

    The official LSKblock: depthwise 5x5 then depthwise 7x7 dilation 3 in sequence, a spatial selection of the two
    from their channel mean and max, output x * map with no sigmoid. Needs an even channel count. Placed after the
    backbone's last two C3, where LSKNet's deep stages sit.
    """

    def __init__(self, c1, c2):
        super().__init__()
        check_args(self, keep=(c1, c2), divisible=[("channels", c1, "2", 2)])
        self.conv0 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, 7, padding=9, dilation=3, groups=c1)
        self.conv1 = nn.Conv2d(c1, c1 // 2, 1)
        self.conv2 = nn.Conv2d(c1, c1 // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(c1 // 2, c1, 1)

    def forward(self, x):
        a1 = self.conv0(x)
        b1, b2 = self.conv1(a1), self.conv2(self.conv_spatial(a1))
        z = torch.cat((b1, b2), 1)
        g = self.conv_squeeze(torch.cat((z.mean(1, keepdim=True), z.amax(1, keepdim=True)), 1)).sigmoid()
        return x * self.conv(b1 * g[:, :1] + b2 * g[:, 1:])


def conv_bn_silu(c):
    """PKINet's default ConvModule, as YOLOv5's Conv: 1x1 conv without bias, BN (eps 1e-3, momentum 0.03), SiLU."""
    return nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, eps=1e-3, momentum=0.03), nn.SiLU())


@register("CAA", channels=Channels.KEEP, placement=DETECT_INPUTS)
class CAA(nn.Module):
    """Context Anchor Attention (Cai et al., CVPR 2024, PKINet).

    The class defaults (1x1 conv-BN-SiLU around the strip convs) and the standalone output x * A(x), as the peers;
    inside PKINet the block is built with plain biased 1x1 convs and its factor multiplies another tensor. The 7x7
    average pooling counts the zero padding, as official. Placed in the neck, as the peers.
    """

    def __init__(self, c1, c2, h_kernel_size=11, v_kernel_size=11):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"h_kernel_size": h_kernel_size, "v_kernel_size": v_kernel_size})
        if h_kernel_size % 2 == 0 or v_kernel_size % 2 == 0:
            raise ValueError(f"CAA: kernel sizes must be odd, got {h_kernel_size} and {v_kernel_size}")
        self.attn = nn.Sequential(
            nn.AvgPool2d(7, 1, 3),
            conv_bn_silu(c1),
            strip_conv(c1, h_kernel_size),
            strip_conv(c1, v_kernel_size, vertical=True),
            conv_bn_silu(c1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.attn(x)
