"""Numerical pieces the global-attention blocks share: FP32 regions and reflection padding for any size."""

from contextlib import nullcontext

import torch


def fp32_region(device_type):
    """Switch autocast off where the device has it, so ops run in the dtype their (float32) inputs have."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else nullcontext()


def at_least_fp32(t):
    """t in float32 when it is a half type (FP16, BF16), otherwise unchanged (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def reflect_index(n, pad):
    """Source rows of an n-row axis reflection-padded by `pad` on both ends, mirrored again past an end.

    Equals ReflectionPad2d's rows whenever pad < n; on shorter axes the mirror repeats (period 2(n - 1)), and a
    1-row axis repeats its row.
    """
    period = 2 * (n - 1)
    if period == 0:
        return [0] * (n + 2 * pad)
    return [m if m < n else period - m for m in (i % period for i in range(-pad, n + pad))]


def reflect_pad(x, pad):
    """(..., H, W) -> (..., H + 2 pad, W + 2 pad) by reflection (reflect_index), for any H, W >= 1."""
    h, w = x.shape[-2:]
    rows = torch.tensor(reflect_index(int(h), pad), device=x.device)
    cols = torch.tensor(reflect_index(int(w), pad), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
