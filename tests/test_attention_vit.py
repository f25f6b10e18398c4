"""models/attention/vit.py: MobileViTAttention (timm's MobileVitBlock) and DeformableAttention (DAT++) as formulas."""

import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64, _rand_bn

from models.attention.vit import DeformableAttention, MobileViTAttention


def _randomise(m, std=0.3):
    for name, p in m.named_parameters():
        if ".bn." not in name:
            torch.nn.init.normal_(p, std=std)
    for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
        _rand_bn(bn)
    return m.double().eval()


def _conv(x, c):
    """models.common.Conv: conv, BN, SiLU."""
    return F.silu(_bn(F.conv2d(x, c.conv.weight, None, 1, c.conv.kernel_size[0] // 2), c.bn))


def _transformer_official(t, layer, heads):
    """timm's pre-norm Block: qkv Linear reshaped (B, N, 3, heads, hd), softmax(q k^T * scale) v, MLP with SiLU."""
    b, n, d = t.shape
    y = F.layer_norm(t, (d,), layer.norm1.weight, layer.norm1.bias)
    qkv = F.linear(y, layer.qkv.weight, layer.qkv.bias).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)
    t = t + F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), layer.proj.weight, layer.proj.bias)
    y = F.layer_norm(t, (d,), layer.norm2.weight, layer.norm2.bias)
    fc1, fc2 = layer.mlp[0], layer.mlp[2]
    return t + F.linear(F.silu(F.linear(y, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)


def _mobilevit_official(x, m, heads):
    """timm's MobileVitBlock: conv_kxk, conv_1x1, resize to patch multiples, unfold, transformer, fold, fusion."""
    y = F.conv2d(_conv(x, m.cv1), m.pw.weight)
    b, d, h, w = y.shape
    p = m.patch
    nh, nw = -(-h // p), -(-w // p)
    interpolate = (nh * p, nw * p) != (h, w)
    if interpolate:
        y = F.interpolate(y, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
    y = y.reshape(b * d * nh, p, nw, p).transpose(1, 2).reshape(b, d, nh * nw, p * p).transpose(1, 3)
    y = y.reshape(b * p * p, nh * nw, d)
    for layer in m.layers:
        y = _transformer_official(y, layer, heads)
    y = F.layer_norm(y, (d,), m.norm.weight, m.norm.bias)
    y = y.contiguous().view(b, p * p, nh * nw, d).transpose(1, 3).reshape(b * d * nh, nw, p, p)
    y = y.transpose(1, 2).reshape(b, d, nh * p, nw * p)
    if interpolate:
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
    return _conv(torch.cat((x, _conv(y, m.cv2)), 1), m.cv3)


@pytest.mark.parametrize("hw, patch", [((6, 4), 2), ((7, 5), 2), ((1, 1), 2), ((8, 6), 3)])
def test_mobilevit_equals_timm_block(hw, patch):
    m = _randomise(MobileViTAttention(16, 16, d=12, depth=2, patch=patch, num_heads=3))
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    assert _equal64(m(x), _mobilevit_official(x, m, 3))


def test_mobilevit_resizes_only_sides_that_are_not_patch_multiples():
    m = _randomise(MobileViTAttention(8, 8, patch=2))
    with mock.patch.object(F, "interpolate", wraps=F.interpolate) as resize:
        m(torch.randn(1, 8, 6, 8, dtype=torch.float64))
        assert resize.call_count == 0
        m(torch.randn(1, 8, 6, 7, dtype=torch.float64))
        assert [c.kwargs["size"] for c in resize.call_args_list] == [(6, 8), (6, 7)]


def _dat_official(x, m, stride, ksize, factor):
    """DAT++ DAttentionBaseline (dwc_pe, no table RPE): offsets from grouped q, grid_sample of x, global attention."""
    b, c, h, w = x.shape
    g, heads = m.groups, m.heads
    cg, hc = c // g, c // heads
    q = F.conv2d(x, m.q.weight, m.q.bias)
    dw, ln, _, pw = m.offset
    off = F.conv2d(q.reshape(b * g, cg, h, w), dw.weight, dw.bias, stride, 0 if ksize == stride else ksize // 2, 1, cg)
    off = F.layer_norm(off.permute(0, 2, 3, 1), (cg,), ln.weight, ln.bias, ln.eps).permute(0, 3, 1, 2)
    off = F.conv2d(F.gelu(off), pw.weight)
    hk, wk = off.shape[2:]
    offset_range = torch.tensor([1.0 / max(hk - 1, 1), 1.0 / max(wk - 1, 1)], dtype=x.dtype).view(1, 2, 1, 1) * factor
    off = (off.tanh() * offset_range).permute(0, 2, 3, 1)
    ref_y, ref_x = torch.meshgrid(
        torch.linspace(0.5, hk - 0.5, hk, dtype=x.dtype),
        torch.linspace(0.5, wk - 0.5, wk, dtype=x.dtype),
        indexing="ij",
    )
    ref = torch.stack((ref_y / max(hk - 1, 1) * 2 - 1, ref_x / max(wk - 1, 1) * 2 - 1), -1)
    pos = off + ref
    xs = F.grid_sample(x.reshape(b * g, cg, h, w), pos[..., (1, 0)], mode="bilinear", align_corners=True)
    xs = xs.reshape(b, c, 1, hk * wk)
    qh = q.reshape(b * heads, hc, h * w)
    k = F.conv2d(xs, m.k.weight, m.k.bias).reshape(b * heads, hc, hk * wk)
    v = F.conv2d(xs, m.v.weight, m.v.bias).reshape(b * heads, hc, hk * wk)
    attn = (torch.einsum("bcm,bcn->bmn", qh, k) * hc**-0.5).softmax(2)
    out = torch.einsum("bmn,bcn->bcm", attn, v).reshape(b, c, h, w)
    out = out + F.conv2d(q, m.pe.weight, m.pe.bias, padding=1, groups=c)
    return F.conv2d(out, m.proj.weight, m.proj.bias)


@pytest.mark.parametrize("hw, stride, ksize", [((6, 5), 1, 3), ((9, 7), 2, 3), ((8, 8), 2, 2), ((1, 4), 1, 3)])
def test_dat_equals_official_head_code(hw, stride, ksize):
    m = _randomise(DeformableAttention(16, 16, num_heads=4, groups=2, stride=stride, offset_range=3.0, ksize=ksize))
    torch.nn.init.normal_(m.offset[3].weight, std=2.0)  # offsets big enough to move the keys far
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    assert _equal64(m(x), _dat_official(x, m, stride, ksize, 3.0))


def test_dat_fp16_builds_its_grids_in_float32():
    m = DeformableAttention(16, 16).eval()
    x = torch.randn(1, 16, 6, 5)
    with torch.no_grad():
        grid, half = m.sample_points(m.q(x)), copy.deepcopy(m).half()
        grid16 = half.sample_points(half.q(x.half()))
        y = half(x.half())
    assert grid16.dtype == torch.float32 and grid16.shape == (4, 6, 5, 2) and (grid16 - grid).abs().max() < 5e-3
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MobileViTAttention(16, 16, d=10, num_heads=4), "d"),
        (lambda: DeformableAttention(16, 16, num_heads=4, groups=8), "num_heads"),
        (lambda: DeformableAttention(16, 16, groups=3), "groups"),
    ],
)
def test_bad_arguments_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
