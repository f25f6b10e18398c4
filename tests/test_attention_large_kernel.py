"""LSKA, LSKBlock, CAA: each equals a float64 transcription of its official formula on the block's own weights."""

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64
from test_attention_multiscale import _randomise

import models.attention as att

# official LSKA table: k_size -> (plain kernel, dilated kernel, dilation), effective extent k0 + (k1 - 1) * dil
LSKA_OFFICIAL = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}


@pytest.mark.parametrize("k_size", list(LSKA_OFFICIAL))
def test_lska_equals_official_code(k_size):
    c = 8
    k0, k1, d = LSKA_OFFICIAL[k_size]
    assert k0 + (k1 - 1) * d == k_size
    m = _randomise(att.LSKA(c, c, k_size).double())
    x = torch.randn(2, c, 9, 14, dtype=torch.float64)
    h0, v0, hs, vs, pw = m.attn
    a = F.conv2d(x, h0.weight, h0.bias, padding=(0, (k0 - 1) // 2), groups=c)  # conv0h: 1 x k0
    a = F.conv2d(a, v0.weight, v0.bias, padding=((k0 - 1) // 2, 0), groups=c)  # conv0v: k0 x 1
    a = F.conv2d(a, hs.weight, hs.bias, padding=(0, (k1 - 1) * d // 2), dilation=d, groups=c)  # dilated 1 x k1
    a = F.conv2d(a, vs.weight, vs.bias, padding=((k1 - 1) * d // 2, 0), dilation=d, groups=c)  # dilated k1 x 1
    official = x * F.conv2d(a, pw.weight, pw.bias)  # no sigmoid
    assert _equal64(m(x), official)


def test_lska_rejects_other_kernels():
    with pytest.raises(ValueError, match="LSKA: k_size"):
        att.LSKA(8, 8, 9)


def test_lsk_block_equals_official_code():
    c = 16
    m = _randomise(att.LSKBlock(c, c).double())
    x = torch.randn(2, c, 11, 8, dtype=torch.float64)
    attn1 = F.conv2d(x, m.conv0.weight, m.conv0.bias, padding=2, groups=c)
    attn2 = F.conv2d(attn1, m.conv_spatial.weight, m.conv_spatial.bias, padding=9, dilation=3, groups=c)
    attn1 = F.conv2d(attn1, m.conv1.weight, m.conv1.bias)
    attn2 = F.conv2d(attn2, m.conv2.weight, m.conv2.bias)
    attn = torch.cat([attn1, attn2], dim=1)
    avg_attn = torch.mean(attn, dim=1, keepdim=True)
    max_attn, _ = torch.max(attn, dim=1, keepdim=True)
    sig = torch.sigmoid(F.conv2d(torch.cat([avg_attn, max_attn], 1), m.conv_squeeze.weight, m.conv_squeeze.bias, 1, 3))
    attn = attn1 * sig[:, 0, :, :].unsqueeze(1) + attn2 * sig[:, 1, :, :].unsqueeze(1)
    official = x * F.conv2d(attn, m.conv.weight, m.conv.bias)
    assert _equal64(m(x), official)
    assert att.LSK is att.LSKblock is att.LSKBlock
    with pytest.raises(ValueError, match="LSKBlock: channels"):
        att.LSKBlock(7, 7)


@pytest.mark.parametrize("kernels", [(11, 11), (13, 7)])
def test_caa_equals_official_code(kernels):
    c = 16
    m = _randomise(att.CAA(c, c, *kernels).double())
    pool, conv1, h_conv, v_conv, conv2, _ = m.attn
    x = torch.randn(2, c, 9, 10, dtype=torch.float64)
    kh, kv = kernels
    t = F.avg_pool2d(x, 7, 1, 3)  # count_include_pad: the border divides by 49
    t = F.silu(_bn(F.conv2d(t, conv1[0].weight), conv1[1]))
    t = F.conv2d(t, h_conv.weight, h_conv.bias, padding=(0, kh // 2), groups=c)
    t = F.conv2d(t, v_conv.weight, v_conv.bias, padding=(kv // 2, 0), groups=c)
    t = F.silu(_bn(F.conv2d(t, conv2[0].weight), conv2[1]))
    assert _equal64(m(x), x * torch.sigmoid(t))
    assert conv1[1].eps == 1e-3 and conv1[1].momentum == 0.03 and conv1[0].bias is None


def test_caa_pooling_counts_the_padding():
    m = att.CAA(4, 4).eval()
    x = torch.ones(1, 4, 5, 5)
    assert torch.allclose(m.attn[0](x)[0, 0, 0, 0], torch.tensor(16 / 49))  # a corner sees 4 x 4 ones of 49 cells
