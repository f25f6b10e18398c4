"""What the attention blocks share: one argument check, the reduced width, the squeeze-excite MLP and the gate.

The constructor contract: a channel-keeping block is `Block(c1, c2, reduction=..., min_channels=..., gate="sigmoid",
...)` with the reduced width `max(c1 // reduction, min_channels)`; a conv replacement is `Block(c1, c2, k, s, ...)`
like `Conv`.
"""

import math

import torch.nn as nn
import torch.nn.functional as F

GATES = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


def check_args(block, keep=None, ints=None, numbers=None, divisible=()):
    """Raise a ValueError naming the block for the first bad argument.

    keep: (c1, c2) that must be equal; ints: {name: value} each an int >= 1; numbers: {name: value} each finite and
    > 0; divisible: (name, value, divisor name, divisor) tuples with value % divisor == 0.
    """
    name = type(block).__name__
    if keep is not None and keep[0] != keep[1]:
        raise ValueError(f"{name} keeps channels: c2 must equal c1, got c1={keep[0]}, c2={keep[1]}")
    for arg, v in (ints or {}).items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {arg} must be an int >= 1, got {v!r}")
    for arg, v in (numbers or {}).items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:
            raise ValueError(f"{name}: {arg} must be a number > 0, got {v!r}")
    for arg, v, divisor_name, divisor in divisible:
        if v % divisor:
            raise ValueError(f"{name}: {arg} ({v}) must be divisible by {divisor_name} ({divisor})")


def reduced_channels(c, reduction, min_channels):
    """The bottleneck width of an attention MLP: c // reduction, at least min_channels."""
    return max(c // reduction, min_channels)


def excite_mlp(c1, c_, c2=None, groups=1, bias=True):
    """The squeeze-excite MLP on pooled (B, c1, 1, 1) maps: 1x1 conv c1 -> c_, ReLU, 1x1 conv c_ -> c2 (default c1)."""
    return nn.Sequential(
        nn.Conv2d(c1, c_, 1, groups=groups, bias=bias),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_, c1 if c2 is None else c2, 1, groups=groups, bias=bias),
    )


def make_gate(block, gate):
    """The gate module named `gate` ('sigmoid' or 'hard_sigmoid'); anything else is an error naming the block."""
    if gate not in GATES:
        raise ValueError(f"{type(block).__name__}: gate must be one of {', '.join(GATES)}, got {gate!r}")
    return GATES[gate]()


def _one_value_per_channel(bn, x):
    return bn.training and x.numel() == x.shape[1]


def _with_running_stats(bn, x):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class BatchNormB1(nn.BatchNorm2d):
    """BatchNorm2d that, training on one value per channel, normalises with its running statistics, unchanged.

    The blocks' BatchNorms can see a pooled (1, C, 1, 1) tensor in YOLOv5's batch-1 train-mode build probe, where
    nn.BatchNorm2d raises; this is the only case that differs (the notes' BN-B1 rule: what the official code computes
    in eval mode). A subclass, so YOLOv5's eps and momentum apply.
    """

    def forward(self, x):
        return _with_running_stats(self, x) if _one_value_per_channel(self, x) else super().forward(x)


class BatchNorm1dB1(nn.BatchNorm1d):
    """BatchNorm1d under the same BN-B1 rule as BatchNormB1 (a pooled (1, C) vector at batch 1)."""

    def forward(self, x):
        return _with_running_stats(self, x) if _one_value_per_channel(self, x) else super().forward(x)
