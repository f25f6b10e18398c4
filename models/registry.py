"""Declarative table of every module a model yaml may name, and how `parse_model` feeds it channels.

Adding a block = writing its class (constructor `(c1, c2, *args)`) and one line in `REGISTRY`.
"""
from dataclasses import dataclass
from enum import Enum

import torch.nn as nn

from models import attention as att
from models.common import C3, SPP, SPPF, Bottleneck, BottleneckCSP, Concat, Conv, DWConv, Focus
from models.yolo import Detect


class Channels(Enum):
    """How a module takes channels from the yaml line `[from, n, module, args]`."""

    CONV = "conv"  # args [c2, *rest]: c2 scaled by width, built as (c1, c2, *rest); may change channels
    REPEAT = "repeat"  # like CONV, and the depth-scaled n goes in as the third argument (C3, BottleneckCSP)
    KEEP = "keep"  # channel-preserving attention: args [c2, *rest], scaled c2 must equal c1
    CONCAT = "concat"  # output channels = sum of the inputs; args as written
    DETECT = "detect"  # args [nc, anchors]: the input channel list is appended
    SAME = "same"  # output channels = input channels; args as written (nn.Upsample)
    NORM = "norm"  # args replaced by [c1] (nn.BatchNorm2d)


@dataclass(frozen=True)
class Entry:
    """A yaml module name's class and channel rule."""

    cls: type
    channels: Channels


_C, _R, _K = Channels.CONV, Channels.REPEAT, Channels.KEEP

REGISTRY = {
    # YOLOv5 v6.1
    "Conv": Entry(Conv, _C),
    "DWConv": Entry(DWConv, _C),
    "Bottleneck": Entry(Bottleneck, _C),
    "Focus": Entry(Focus, _C),
    "SPP": Entry(SPP, _C),
    "SPPF": Entry(SPPF, _C),
    "BottleneckCSP": Entry(BottleneckCSP, _R),
    "C3": Entry(C3, _R),
    "Concat": Entry(Concat, Channels.CONCAT),
    "Detect": Entry(Detect, Channels.DETECT),
    "nn.Upsample": Entry(nn.Upsample, Channels.SAME),
    "nn.MaxPool2d": Entry(nn.MaxPool2d, Channels.SAME),
    "nn.Identity": Entry(nn.Identity, Channels.SAME),
    "nn.BatchNorm2d": Entry(nn.BatchNorm2d, Channels.NORM),
    # attention blocks (models/attention/)
    "SOCA": Entry(att.SOCA, _K),
    "SE": Entry(att.SE, _K),
    "SElayer": Entry(att.SE, _K),
    "SEAttention": Entry(att.SE, _K),
    "CBAM": Entry(att.CBAM, _K),
    "DoubleAttention": Entry(att.DoubleAttention, _K),
    "DoubleAttentionLayer": Entry(att.DoubleAttention, _K),
    "A2": Entry(att.DoubleAttention, _K),
    "SKAttention": Entry(att.SKAttention, _K),
    "SKConv": Entry(att.SKAttention, _K),
    "scSE": Entry(att.scSE, _K),
    "SGE": Entry(att.SGE, _K),
    "SpatialGroupEnhance": Entry(att.SGE, _K),
    "ECA": Entry(att.ECA, _K),
    "CoordAtt": Entry(att.CoordAtt, _K),
    "SimAM": Entry(att.SimAM, _K),
    "SCConv": Entry(att.SCConv, _C),
    "SplitAttn": Entry(att.SplitAttn, _C),
    "ResNeSt": Entry(att.SplitAttn, _C),
    "DynamicConv": Entry(att.DynamicConv, _C),
    "Dynamic_conv2d": Entry(att.DynamicConv, _C),
}
