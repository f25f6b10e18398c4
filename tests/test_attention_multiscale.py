"""EMA, MLCA, ELA, CPCA: each equals a float64 transcription of its official formula on the block's own weights."""

import pytest
import torch
import torch.nn.functional as F
from test_attention import _equal64, _rand_bn

import models.attention as att
from models.attention.multiscale import ELA_VARIANTS, adaptive_pool_matrix


def _randomise(m, std=0.5):
    """Draw every parameter and BatchNorm statistic, so that no term is trivially zero or the identity; eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            _rand_bn(bn)
    return m.eval()


def _ema_official(m, x):
    """EMA's official forward, one channel group at a time, the cross-spatial sums as einsums."""
    b, c, h, w = x.shape
    c_ = c // m.groups
    conv1, conv3, gn = m.conv1x1, m.conv3x3, m.gn
    out = []
    for g in range(m.groups):
        xg = x[:, g * c_ : (g + 1) * c_]
        x_h = F.adaptive_avg_pool2d(xg, (h, 1))
        x_w = F.adaptive_avg_pool2d(xg, (1, w)).permute(0, 1, 3, 2)
        hw = F.conv2d(torch.cat([x_h, x_w], 2), conv1.weight, conv1.bias)
        x_h, x_w = torch.split(hw, [h, w], 2)
        x1 = F.group_norm(xg * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid(), c_, gn.weight, gn.bias, gn.eps)
        x2 = F.conv2d(xg, conv3.weight, conv3.bias, padding=1)
        a1 = F.softmax(F.adaptive_avg_pool2d(x1, 1).flatten(1), -1)
        a2 = F.softmax(F.adaptive_avg_pool2d(x2, 1).flatten(1), -1)
        weights = torch.einsum("bc,bchw->bhw", a1, x2) + torch.einsum("bc,bchw->bhw", a2, x1)
        out.append(xg * weights.sigmoid().unsqueeze(1))
    return torch.cat(out, 1)


@pytest.mark.parametrize("c, factor, hw", [(64, 32, (7, 5)), (32, 8, (6, 9)), (16, 32, (4, 3))])
def test_ema_equals_official_code(c, factor, hw):
    m = _randomise(att.EMA(c, c, factor).double())
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    assert _equal64(m(x), _ema_official(m, x))


def test_ema_groups_are_the_official_factor_when_it_divides():
    assert [att.EMA(c, c).groups for c in (64, 128, 256, 1024)] == [32] * 4
    assert [att.EMA(c, c).groups for c in (16, 48, 24)] == [16, 16, 8]  # gcd(32, C) below or off the factor
    assert att.EMA(64, 64, factor=8).groups == 8


@pytest.mark.parametrize("n_in", range(1, 14))
@pytest.mark.parametrize("n_out", [1, 2, 3, 5, 7, 13])
def test_adaptive_pool_matrix_equals_pytorch_bins(n_in, n_out):
    v = torch.randn(3, 4, n_in, dtype=torch.float64)
    pool = adaptive_pool_matrix(n_in, n_out, v)
    assert pool.dtype == v.dtype and torch.allclose(v @ pool.T, F.adaptive_avg_pool1d(v, n_out))


def _mlca_official(m, x):
    """MLCA's official forward: adaptive pools, the local sequence cell by cell with channels fastest, explicit taps."""
    b, c, h, w = x.shape
    s, lw = m.local_size, m.local_weight
    local = F.adaptive_avg_pool2d(x, s)
    glob = F.adaptive_avg_pool2d(local, 1)
    seq = torch.cat([local[:, :, i, j] for i in range(s) for j in range(s)], 1)  # (B, s*s*C)

    def conv1d(v, weight):  # cross-correlation with zero padding at the two ends only
        k = weight.numel()
        padded = F.pad(v, (k // 2, k // 2))
        return sum(weight.flatten()[t] * padded[:, t : t + v.shape[1]] for t in range(k))

    y_local = conv1d(seq, m.conv_local.weight).view(b, s * s, c).transpose(1, 2).reshape(b, c, s, s)
    y_global = conv1d(glob.flatten(1), m.conv_global.weight).view(b, c, 1, 1)
    att_global = F.adaptive_avg_pool2d(y_global.sigmoid(), [s, s])
    att_all = F.adaptive_avg_pool2d(att_global * (1 - lw) + y_local.sigmoid() * lw, [h, w])
    return x * att_all


@pytest.mark.parametrize("hw", [(10, 15), (7, 12), (3, 2), (1, 1), (13, 6)])
@pytest.mark.parametrize("c, local_weight", [(16, 0.5), (128, 0.3)])
def test_mlca_equals_official_code_at_every_size(hw, c, local_weight):
    m = att.MLCA(c, c, local_weight=local_weight).double()
    for conv in (m.conv_local, m.conv_global):
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    assert _equal64(m(x), _mlca_official(m, x))


def test_mlca_kernel_sizes_as_official():
    sizes = {c: att.MLCA(c, c).conv_local.kernel_size[0] for c in (2, 16, 96, 128, 1024, 2048)}
    assert sizes == {2: 1, 16: 3, 96: 3, 128: 5, 1024: 5, 2048: 7}


def _group_norm(z, groups, weight, bias, eps):
    """GroupNorm written out: biased variance over each group's channels and positions."""
    b, c, n = z.shape
    zg = z.reshape(b, groups, -1)
    zg = (zg - zg.mean(2, keepdim=True)) / (zg.var(2, unbiased=False, keepdim=True) + eps).sqrt()
    return zg.reshape(b, c, n) * weight[:, None] + bias[:, None]


@pytest.mark.parametrize("phi", list(ELA_VARIANTS))
def test_ela_equals_paper_formula(phi):
    c = 32
    m = _randomise(att.ELA(c, c, phi).double())
    x = torch.randn(2, c, 6, 9, dtype=torch.float64)
    k, per_group, gn = {"T": (5, 1, 32), "B": (7, 1, 16), "S": (5, 8, 16), "L": (7, 8, 16)}[phi]
    conv = m.conv
    assert conv.kernel_size == (k,) and conv.groups == c // per_group and conv.bias is None and m.gn.num_groups == gn

    def gate(z):
        y = F.conv1d(z, conv.weight, None, padding=k // 2, groups=c // per_group)
        return torch.sigmoid(_group_norm(y, gn, m.gn.weight, m.gn.bias, m.gn.eps))

    a_h, a_w = gate(x.mean(3)), gate(x.mean(2))
    official = torch.einsum("bchw,bch,bcw->bchw", x, a_h, a_w)
    assert _equal64(m(x), official)


def test_ela_group_of_one_value_gives_its_bias():
    m = _randomise(att.ELA(16, 16).double())  # GroupNorm(16, 16): a 1x1 map leaves one value per group
    x = torch.randn(1, 16, 1, 1, dtype=torch.float64)
    gate = torch.sigmoid(m.gn.bias).view(1, 16, 1, 1)
    assert _equal64(m(x), x * gate * gate)


def test_ela_checks_channels():
    with pytest.raises(ValueError, match="ELA: channels"):
        att.ELA(16, 16, "T")
    with pytest.raises(ValueError, match="ELA: phi"):
        att.ELA(16, 16, "X")


def test_cpca_equals_official_code():
    c = 16
    m = _randomise(att.CPCA(c, c).double(), std=0.3)
    x = torch.randn(2, c, 9, 7, dtype=torch.float64)
    wc, fc1, fc2 = m.proj, m.mlp[0], m.mlp[2]

    def pw(v):
        return F.conv2d(v, wc.weight, wc.bias)

    def dw(v, conv, pad):
        return F.conv2d(v, conv.weight, conv.bias, padding=pad, groups=c)

    def channel_mlp(v):
        return torch.sigmoid(
            F.linear(F.relu(F.linear(v, fc1.weight.flatten(1), fc1.bias)), fc2.weight.flatten(1), fc2.bias)
        )

    u = F.gelu(pw(x))
    ca = channel_mlp(F.adaptive_avg_pool2d(u, 1).flatten(1)) + channel_mlp(F.adaptive_max_pool2d(u, 1).flatten(1))
    u = u * ca[..., None, None]
    x_init = dw(u, m.dw5, 2)
    total = x_init
    for strip, k in zip(m.strips, (7, 11, 21)):
        total = total + dw(dw(x_init, strip[0], (0, k // 2)), strip[1], (k // 2, 0))
    official = pw(pw(total) * u)
    assert _equal64(m(x), official)
