"""Second-order channel attention (SOCA): covariance pooling with a Newton-Schulz matrix square root."""

from contextlib import nullcontext

import torch
import torch.nn as nn

from models.attention.helpers import check_args, excite_mlp, make_gate, reduced_channels
from models.placement import P5_OUTPUT
from models.registry import Channels, register

MAX_SIDE = 1000  # SAN computes the statistics on at most a 1000 x 1000 centre crop


def centred_covariance(x):
    """(B, C, M) -> (B, C, C) covariance (1/M) Xc Xc^T with Xc centred over M; never builds an M x M matrix."""
    xc = x - x.mean(dim=2, keepdim=True)
    return torch.bmm(xc, xc.transpose(1, 2)) / x.shape[2]


def newton_schulz_sqrt(a, iters=5, eps=1e-12):
    """Square root of a batch of symmetric PSD matrices (B, C, C) by the coupled Newton-Schulz iteration."""
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"newton_schulz_sqrt: iters must be an int >= 1, got {iters!r}")
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    trace = (a * eye).sum(dim=(1, 2), keepdim=True).clamp_min(eps)
    y = a / trace  # trace normalisation puts the spectrum in (0, 1], where the iteration converges
    i3, z = 3.0 * eye, eye.expand_as(a)
    for _ in range(iters - 1):
        t = 0.5 * (i3 - z.bmm(y))
        y, z = y.bmm(t), t.bmm(z)
    y = 0.5 * y.bmm(i3 - z.bmm(y))  # last step: Z is no longer needed
    return y * trace.sqrt()


def centre_crop(x, max_side=MAX_SIDE):
    """Centre crop of a (B, C, H, W) map so that neither side exceeds max_side."""
    h, w = x.shape[2:]
    top, left = max(h - max_side, 0) // 2, max(w - max_side, 0) // 2
    return x[:, :, top : top + min(h, max_side), left : left + min(w, max_side)]


def _fp32_region(device_type):
    """Switch autocast off where the device has it, so matmuls run in the dtype their inputs have."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else nullcontext()


@register("SOCA", channels=Channels.KEEP, placement=P5_OUTPUT)
class SOCA(nn.Module):
    """Second-order channel attention (Dai et al., CVPR 2019, Second-order Attention Network for SISR)."""

    def __init__(self, c1, c2, reduction=8, min_channels=1, gate="sigmoid", iters=5):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels, "iters": iters})
        self.iters = iters
        self.fc = nn.Sequential(*excite_mlp(c1, reduced_channels(c1, reduction, min_channels)), make_gate(self, gate))

    def forward(self, x):
        return x * self.fc(self.descriptor(x))

    def descriptor(self, x):
        """(B, C, H, W) -> (B, C, 1, 1): row means of the covariance square root, computed in FP32."""
        with _fp32_region(x.device.type):
            f = centre_crop(x).float().flatten(2)
            s = newton_schulz_sqrt(centred_covariance(f), self.iters)
            return s.mean(dim=2).to(x.dtype)[..., None, None]
