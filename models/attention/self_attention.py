"""Self-attention over positions: CrissCrossAttention, MHSA (BoTNet), NonLocal, DANet. All keep (B, C, H, W).

Their cost grows with the number of positions N = H * W (N^2 for MHSA, NonLocal and DANet's PAM), so their default
place is P5.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.helpers import BatchNormB1, check_args, reduced_channels
from models.attention.stable import at_least_fp32, fp32_region
from models.placement import BEFORE_SPPF, P5_OUTPUT
from models.registry import Channels, register


@register("CrissCrossAttention", "CCA", channels=Channels.KEEP, placement=P5_OUTPUT)
class CrissCrossAttention(nn.Module):
    """Criss-cross attention, applied `recurrence` times with shared weights (Huang et al., ICCV 2019, CCNet).

    As CCNet's code: each position attends to its row and its column (itself once), one softmax over those H + W - 1
    logits, no scaling, y = gamma * out + x with gamma = 0 at start. Query/key width c1 // 8, at least 1.
    """

    def __init__(self, c1, c2, recurrence=1, reduction=8, min_channels=1):
        super().__init__()
        check_args(
            self,
            keep=(c1, c2),
            ints={"recurrence": recurrence, "reduction": reduction, "min_channels": min_channels},
        )
        c_ = reduced_channels(c1, reduction, min_channels)
        self.recurrence = recurrence
        self.query = nn.Conv2d(c1, c_, 1)
        self.key = nn.Conv2d(c1, c_, 1)
        self.value = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        for _ in range(self.recurrence):
            x = self.gamma * self.attend(x) + x
        return x

    def attend(self, x):
        """sum over the criss-cross set of softmax(q . k) v: (B, C, H, W) -> (B, C, H, W)."""
        h, w = x.shape[2:]
        q, k, v = self.query(x), self.key(x), self.value(x)
        e_h = q.permute(0, 3, 2, 1) @ k.permute(0, 3, 1, 2)  # (B, W, H, H'): keys in the column
        e_w = q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3)  # (B, H, W, W'): keys in the row
        i = torch.arange(h, device=x.device)
        self_in_column = i[:, None] == i[None, :]  # the row already holds the position
        e_h = e_h.masked_fill(self_in_column, torch.finfo(e_h.dtype).min)  # finite: some runtimes reject inf
        a = torch.cat((e_h.permute(0, 2, 1, 3), e_w), 3).softmax(3)  # (B, H, W, H' + W'): one softmax
        a_h, a_w = a[..., :h], a[..., h:]
        out_h = v.permute(0, 3, 1, 2) @ a_h.permute(0, 2, 3, 1)  # (B, W, C, H)
        out_w = v.permute(0, 2, 1, 3) @ a_w.transpose(2, 3)  # (B, H, C, W)
        return out_h.permute(0, 2, 3, 1) + out_w.permute(0, 2, 1, 3)


def relative_index(n, n0, device):
    """(n, n) table rows of the offsets j - i, clipped to the 2 n0 - 1 offsets a table built for n0 positions holds."""
    i = torch.arange(n, device=device)
    return (i[None, :] - i[:, None] + n0 - 1).clamp(0, 2 * n0 - 2)


@register("MHSA", "BoT", channels=Channels.KEEP, placement=BEFORE_SPPF)
class MHSA(nn.Module):
    """Multi-head self-attention with 2D relative positions (Srinivas et al., CVPR 2021, BoTNet).

    As the BoTNet reference: q, k, v 1x1 convs without bias, q scaled by d^-0.5 for both the content and the position
    logits q.k + q.r_w[x' - x] + q.r_h[y' - y], tables of 2 w0 - 1 and 2 h0 - 1 rows shared by the heads, no output
    projection. Maps up to (h0, w0) use the centre of the tables (exact); on larger maps offsets beyond the table are
    clipped to its last row (Shaw et al. 2018's clipping), the BoTNet code has no rule there. Default tables: a 20 x 20
    map, P5 at 640. Init: timm's (normal, std c1^-0.5 for q, k, v and d^-0.5 for the tables).
    """

    def __init__(self, c1, c2, heads=4, h0=20, w0=20):
        super().__init__()
        check_args(
            self,
            keep=(c1, c2),
            ints={"heads": heads, "h0": h0, "w0": w0},
            divisible=[("channels", c1, "heads", heads)],
        )
        self.heads, self.d, self.h0, self.w0 = heads, c1 // heads, h0, w0
        self.qkv = nn.Conv2d(c1, 3 * c1, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * h0 - 1, self.d) * self.d**-0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * w0 - 1, self.d) * self.d**-0.5)
        nn.init.normal_(self.qkv.weight, std=c1**-0.5)

    def forward(self, x):
        h, w = x.shape[2:]
        d, n = self.d, h * w
        q, k, v = (t.reshape(-1, d, n) for t in self.qkv(x).reshape(-1, 3, self.heads, d, n).unbind(1))
        q = q * d**-0.5
        content = q.transpose(1, 2) @ k  # (B heads, N, N)
        q_hw = q.transpose(1, 2).reshape(-1, h, w, d)
        table_h = self.rel_h[relative_index(h, self.h0, x.device)].transpose(1, 2)  # (H, d, H'): row y, offset y' - y
        table_w = self.rel_w[relative_index(w, self.w0, x.device)].transpose(1, 2)  # (W, d, W')
        pos_h = q_hw @ table_h  # (B heads, H, W, H')
        pos_w = (q_hw.transpose(1, 2) @ table_w).transpose(1, 2)  # (B heads, H, W, W')
        logits = content.reshape(-1, h, w, h, w) + pos_h[..., None] + pos_w[:, :, :, None, :]
        a = logits.reshape(-1, n, n).softmax(-1)
        return (v @ a.transpose(1, 2)).reshape(x.shape)


@register("NonLocal", "NonLocalBlock", "NLBlock", channels=Channels.KEEP, placement=BEFORE_SPPF)
class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018, Non-local Neural Networks).

    As the official video-nonlocal-net config in 2D: width c1 // 2, phi and g on the 2x2 max-pooled input (floor; maps
    under 2 pixels a side are not pooled), logits scaled by width^-0.5, conv then BatchNorm with gamma = beta = 0 so
    the block starts as the identity; convs N(0, 0.01), biases 0.
    """

    def __init__(self, c1, c2, sub_sample=True, reduction=2, min_channels=1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        c_ = reduced_channels(c1, reduction, min_channels)
        self.sub_sample, self.scale = bool(sub_sample), c_**-0.5
        self.theta, self.phi, self.g = (nn.Conv2d(c1, c_, 1) for _ in range(3))
        self.out = nn.Conv2d(c_, c1, 1)
        self.bn = BatchNormB1(c1)
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x):
        h, w = x.shape[2:]
        xp = F.max_pool2d(x, 2, 2) if self.sub_sample and min(h, w) >= 2 else x
        theta = self.theta(x).flatten(2)  # (B, C', N)
        phi, g = self.phi(xp).flatten(2), self.g(xp).flatten(2)  # (B, C', N')
        a = (theta.transpose(1, 2) @ phi * self.scale).softmax(-1)  # (B, N, N')
        y = (g @ a.transpose(1, 2)).reshape(-1, self.out.in_channels, h, w)
        return x + self.bn(self.out(y))


class PAM(nn.Module):
    """Position attention module of DANet (Fu et al., CVPR 2019, Dual Attention Network)."""

    def __init__(self, c, reduction=8, min_channels=1):
        super().__init__()
        c_ = reduced_channels(c, reduction, min_channels)
        self.query, self.key, self.value = nn.Conv2d(c, c_, 1), nn.Conv2d(c, c_, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        q, k, v = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        a = (q.transpose(1, 2) @ k).softmax(-1)  # (B, N, N'): unscaled logits, as DANet
        return self.gamma * (v @ a.transpose(1, 2)).reshape(x.shape) + x


class CAM(nn.Module):
    """Channel attention module of DANet (Fu et al., CVPR 2019, Dual Attention Network).

    softmax over j of max_j' E - E with E = X X^T, which favours dissimilar channels, as DANet's code and authors
    intend. E (N products per entry) and its softmax are computed in FP32: they overflow FP16 at P3/P4.
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        f = x.flatten(2)  # (B, C, N)
        with fp32_region(x.device.type):
            f32 = at_least_fp32(f)
            e = f32 @ f32.transpose(1, 2)
            a = (e.amax(-1, keepdim=True) - e).softmax(-1).to(x.dtype)
        return self.gamma * (a @ f).reshape(x.shape) + x


def _cbr(c1, c2):
    """DANet's 3x3 conv without bias, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1, bias=False), BatchNormB1(c2), nn.ReLU())


@register("DANet", "DualAttention", channels=Channels.KEEP, placement=P5_OUTPUT)
class DANet(nn.Module):
    """Dual attention head: position and channel attention (Fu et al., CVPR 2019, Dual Attention Network).

    DANetHead without its auxiliary outputs: y = conv1x1(Dropout2d(CBR(PAM(CBR(x))) + CBR(CAM(CBR(x))))), inner width
    c1 // reduction (DANet: 4), PAM's query/key width inner // 8 (at least 1). It replaces features (no residual);
    placed channel-keeping, so its output width c2 is c1.
    """

    def __init__(self, c1, c2, reduction=4, min_channels=1, dropout=0.1):
        super().__init__()
        check_args(self, keep=(c1, c2), ints={"reduction": reduction, "min_channels": min_channels})
        if not 0 <= dropout < 1:
            raise ValueError(f"DANet: dropout must be in [0, 1), got {dropout!r}")
        c_ = reduced_channels(c1, reduction, min_channels)
        self.position = nn.Sequential(_cbr(c1, c_), PAM(c_), _cbr(c_, c_))
        self.channel = nn.Sequential(_cbr(c1, c_), CAM(), _cbr(c_, c_))
        self.out = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(c_, c2, 1))

    def forward(self, x):
        return self.out(self.position(x) + self.channel(x))
