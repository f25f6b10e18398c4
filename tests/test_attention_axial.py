"""models/attention/axial.py: AxialAttention against axial-deeplab's AxialBlock, in einsum and index_select."""

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64, _rand_bn

from models.attention.axial import AxialAttention


def _bn1d(y, bn):
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise(m):
    for bn in (b for b in m.modules() if isinstance(b, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))):
        _rand_bn(bn)
    torch.nn.init.normal_(m.height.rel)
    torch.nn.init.normal_(m.width.rel)
    return m.double().eval()


def _axial_official(x, layer, table):
    """axial-deeplab's AxialAttention on (N, C, L) with kernel_size = L and relative table `table` (2gp, 2L - 1)."""
    n, c, length = x.shape
    g = layer.groups
    gp = c // g
    qkv = _bn1d(F.conv1d(x, layer.qkv.weight), layer.bn_qkv).reshape(n, g, 2 * gp, length)
    q, k, v = torch.split(qkv, [gp // 2, gp // 2, gp], dim=2)
    relative_index = torch.arange(length)[:, None] - torch.arange(length)[None] + length - 1  # [i, j]: i - j
    emb = torch.index_select(table, 1, relative_index.reshape(-1)).view(2 * gp, length, length)
    q_emb, k_emb, v_emb = torch.split(emb, [gp // 2, gp // 2, gp], dim=0)
    qr = torch.einsum("bgci,cij->bgij", q, q_emb)
    kr = torch.einsum("bgci,cij->bgij", k, k_emb).transpose(2, 3)
    qk = torch.einsum("bgci,bgcj->bgij", q, k)
    stacked = _bn(torch.cat([qk, qr, kr], dim=1), layer.bn_logits).view(n, 3, g, length, length).sum(dim=1)
    sim = F.softmax(stacked, dim=3)
    sv = torch.einsum("bgij,bgcj->bgci", sim, v)
    sve = torch.einsum("bgij,cij->bgci", sim, v_emb)
    out = _bn1d(torch.cat([sv, sve], dim=-1).view(n, 2 * c, length), layer.bn_out)
    return out.view(n, c, 2, length).sum(dim=-2)


def _central(table, length):
    """The 2L - 1 columns of a wider table around its centre (offsets -(L-1)..L-1); clamped beyond its edges."""
    span = (table.shape[1] + 1) // 2
    cols = (torch.arange(2 * length - 1) - (length - 1)).clamp(1 - span, span - 1) + span - 1
    return table[:, cols]


def _block_official(x, m):
    """AxialBlock: conv_down, bn1, relu, height, width, relu, conv_up, bn2, + identity, relu."""
    y = F.relu(_bn(F.conv2d(x, m.down[0].weight), m.down[1]))
    b, c, h, w = y.shape
    y = y.permute(0, 3, 1, 2).reshape(b * w, c, h)
    y = _axial_official(y, m.height, _central(m.height.rel, h)).view(b, w, c, h).permute(0, 2, 3, 1)
    y = y.permute(0, 2, 1, 3).reshape(b * h, c, w)
    y = _axial_official(y, m.width, _central(m.width.rel, w)).view(b, h, c, w).permute(0, 2, 1, 3)
    return F.relu(x + _bn(F.conv2d(F.relu(y), m.up[0].weight), m.up[1]))


def test_axial_equals_official_block_when_span_is_the_side():
    m = _randomise(AxialAttention(16, 16, groups=2, span=6))
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    assert torch.equal(_central(m.height.rel, 6), m.height.rel)  # L == span: the official table as it is
    assert _equal64(m(x), _block_official(x, m))


@pytest.mark.parametrize("hw", [(5, 7), (1, 3)])
def test_axial_shorter_sides_use_the_central_offsets(hw):
    m = _randomise(AxialAttention(16, 16, groups=2, span=9))
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    assert _equal64(m(x), _block_official(x, m))


def test_axial_sides_longer_than_span_clamp_the_offsets():
    m = _randomise(AxialAttention(16, 16, groups=2, span=3))
    x = torch.randn(1, 16, 8, 5, dtype=torch.float64)  # larger than built for: offsets beyond +-2 read the edge column
    assert _equal64(m(x), _block_official(x, m))


def test_axial_needs_even_group_width():
    with pytest.raises(ValueError, match="AxialAttention: c1 / 2"):
        AxialAttention(16, 16, groups=8)
