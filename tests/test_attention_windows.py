"""models/attention/windows.py: BiLevelRoutingAttention, HaloAttention, CloAttention against the official formulas.

Each official formula is transcribed with loops and einsum (the blocks use window reshapes and matmuls) and run in
float64 on the block's own, randomised, weights.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64, _rand_bn

from models.attention.windows import (
    BiLevelRoutingAttention,
    CloAttention,
    HaloAttention,
    pad_to_multiple,
    to_windows,
    window_means,
)


def _randomise(m, std=0.5):
    """Give every conv/linear weight and bias of m random values (no zero or identity-like parameter left)."""
    for name, p in m.named_parameters():
        if "bn" not in name and "norm" not in name:
            torch.nn.init.normal_(p, std=std)
    for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
        _rand_bn(bn)
    return m.double().eval()


def _bra_official(x, m, n_win, topk):
    """BiFormer's legacy BRA (auto_pad, NHWC): Linear q|k|v, routing on window means, per-window gathered attention."""
    xh = x.permute(0, 2, 3, 1)
    b, h, w, c = xh.shape
    xh = F.pad(xh, (0, 0, 0, (n_win - w % n_win) % n_win, 0, (n_win - h % n_win) % n_win))
    hp, wp = xh.shape[1:3]
    wh, ww = hp // n_win, wp // n_win
    qkv = F.linear(xh, m.qkv.weight.flatten(1), m.qkv.bias)
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]

    def win(t, p):  # window p (row-major) of an NHWC map: (B, wh*ww, C)
        jy, jx = divmod(int(p), n_win)
        return t[:, jy * wh : (jy + 1) * wh, jx * ww : (jx + 1) * ww].reshape(b, -1, c)

    s, d, n_p = c**-0.5, c // m.heads, n_win**2
    qr = torch.stack([win(q, p).mean(1) for p in range(n_p)], 1)
    kr = torch.stack([win(k, p).mean(1) for p in range(n_p)], 1)
    idx = torch.einsum("bpc,brc->bpr", qr * s, kr).topk(topk, -1).indices
    out = torch.zeros_like(q)
    for i in range(b):
        for p in range(n_p):
            keys = torch.cat([win(k, r)[i] for r in idx[i, p]])
            vals = torch.cat([win(v, r)[i] for r in idx[i, p]])
            qp = win(q, p)[i]
            heads = []
            for j in range(m.heads):
                hd = slice(j * d, (j + 1) * d)
                heads.append(torch.softmax(qp[:, hd] * s @ keys[:, hd].T, -1) @ vals[:, hd])
            jy, jx = divmod(p, n_win)
            out[i, jy * wh : (jy + 1) * wh, jx * ww : (jx + 1) * ww] = torch.cat(heads, -1).view(wh, ww, c)
    ks = m.lepe.kernel_size[0]
    lepe = F.conv2d(v.permute(0, 3, 1, 2), m.lepe.weight, m.lepe.bias, padding=ks // 2, groups=c).permute(0, 2, 3, 1)
    y = F.linear(out + lepe, m.proj.weight.flatten(1), m.proj.bias)
    return y[:, :h, :w].permute(0, 3, 1, 2)


@pytest.mark.parametrize("hw", [(9, 6), (7, 5), (2, 8)])  # a multiple of n_win, padded, fewer pixels than windows
def test_bra_equals_official_legacy_code(hw):
    m = _randomise(BiLevelRoutingAttention(8, 8, num_heads=2, n_win=3, topk=2, side_dwconv=3))
    x = torch.randn(2, 8, *hw, dtype=torch.float64)
    assert _equal64(m(x), _bra_official(x, m, 3, 2))


def test_bra_pad_and_crop_is_running_on_the_zero_padded_multiple():
    m = _randomise(BiLevelRoutingAttention(8, 8, num_heads=2, n_win=4, topk=3))
    x = torch.randn(1, 8, 10, 7, dtype=torch.float64)
    assert torch.equal(m(x), m(pad_to_multiple(x, 4, 4))[:, :, :10, :7])


def test_bra_float32_routes_as_float64():
    m = BiLevelRoutingAttention(16, 16).eval()  # defaults: 5 x 5 windows, top 4
    x = torch.randn(2, 16, 20, 13)
    m64, x64 = copy.deepcopy(m).double(), x.double()
    with torch.no_grad():
        routes = [b.route(to_windows(q, 5), to_windows(k, 5)) for b, q, k in ((m, *_qk(m, x)), (m64, *_qk(m64, x64)))]
        assert routes[0].shape == (2, 25, 4) and torch.equal(*routes)
        assert (m(x) - m64(x64)).abs().max() < 1e-6


def _qk(m, x):
    q, k, _ = m.qkv(pad_to_multiple(x, m.n_win, m.n_win)).chunk(3, 1)
    return q, k


def _halo_official(y, attn):
    """timm's HaloAttn (stride 1) on a map whose sides are multiples of block_size, with loops over blocks and heads."""
    b, c, h, w = y.shape
    bs, halo, heads = attn.block, attn.halo, attn.heads
    d, win = c // heads, bs + 2 * halo
    q = F.conv2d(y, attn.q.weight)
    kv = F.pad(F.conv2d(y, attn.kv.weight), [halo] * 4)
    idx = win - 1 + torch.arange(win)[None] - torch.arange(bs)[:, None]  # table row of (query row i, key row u)
    rh, rw = attn.rel_h[idx], attn.rel_w[idx]  # (bs, win, d)
    out = torch.zeros(b, c, h, w, dtype=y.dtype)
    for bi in range(h // bs):
        for bj in range(w // bs):
            for j in range(heads):
                qb = q[:, j * d : (j + 1) * d, bi * bs : (bi + 1) * bs, bj * bs : (bj + 1) * bs]
                kvw = kv[:, j * 2 * d : (j + 1) * 2 * d, bi * bs : bi * bs + win, bj * bs : bj * bs + win]
                kw, vw = kvw[:, :d], kvw[:, d:]
                logits = attn.scale * torch.einsum("bdij,bduv->bijuv", qb, kw)
                logits = logits + torch.einsum("bdij,iud->biju", qb, rh)[..., None]
                logits = logits + torch.einsum("bdij,jvd->bijv", qb, rw)[..., None, :]
                a = logits.reshape(b, bs, bs, -1).softmax(-1).view_as(logits)
                o = torch.einsum("bijuv,bduv->bdij", a, vw)
                out[:, j * d : (j + 1) * d, bi * bs : (bi + 1) * bs, bj * bs : (bj + 1) * bs] = o
    return out


def _conv_bn(x, conv, act=True):
    """models.common.Conv (conv, BN, SiLU) written out."""
    k = conv.conv.kernel_size[0]
    y = _bn(F.conv2d(x, conv.conv.weight, None, 1, k // 2), conv.bn)
    return F.silu(y) if act else y


@pytest.mark.parametrize("hw", [(8, 12), (11, 6)])  # multiples of block_size; not (zero-padded, cropped)
def test_halo_equals_timm_halo_attn_in_self_attn_block(hw):
    m = _randomise(HaloAttention(16, 16, num_heads=2, block_size=4, halo_size=1, e=0.5))
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    y = _conv_bn(x, m.cv1)
    a = _halo_official(pad_to_multiple(y, 4, 4), m.attn)[:, :, : hw[0], : hw[1]]
    official = F.silu(x + _conv_bn(F.silu(_bn(a, m.bn)), m.cv2, act=False))
    assert _equal64(m(x), official)


def test_halo_pad_and_crop_is_running_on_the_zero_padded_multiple():
    attn = _randomise(HaloAttention(16, 16, num_heads=4, block_size=4, halo_size=2, e=1.0)).attn
    y = torch.randn(1, 16, 9, 5, dtype=torch.float64)
    assert torch.equal(attn(y), attn(pad_to_multiple(y, 4, 4))[:, :, :9, :5])


def test_halo_keeps_big_maps_local():
    attn = HaloAttention(16, 16, block_size=4, halo_size=1, e=1.0).attn.eval()
    y = torch.randn(1, 16, 16, 16)
    far = y.clone()
    far[:, :, 12:, 12:] += 1  # outside the halo of the top-left block
    with torch.no_grad():
        assert torch.equal(attn(y)[:, :, :4, :4], attn(far)[:, :, :4, :4])


def _clo_official(x, m, pooled):
    """CloFormer's EfficientAttention with the pooled map given (the official pooling: AvgPool2d(ws, ws))."""
    b, c, h, w = x.shape
    outs = []
    for br in m.local:
        ci, k = br.mixer[0].in_channels, br.dw.kernel_size[0]
        t = F.conv2d(F.conv2d(x, br.qkv.weight, br.qkv.bias), br.dw.weight, br.dw.bias, padding=k // 2, groups=3 * ci)
        q, kk, v = torch.split(t, ci, 1)
        a = F.conv2d(
            F.silu(F.conv2d(q * kk, br.mixer[0].weight, br.mixer[0].bias)), br.mixer[2].weight, br.mixer[2].bias
        )
        outs.append(torch.tanh(a * m.scale) * v)
    g = m.global_heads
    q = F.conv2d(x, m.q.weight, m.q.bias).reshape(b, g, -1, h * w)
    kv = F.conv2d(pooled, m.kv.weight, m.kv.bias).reshape(b, 2, g, q.shape[2], -1)
    attn = (torch.einsum("bgdi,bgdj->bgij", q, kv[:, 0]) * m.scale).softmax(-1)
    outs.append(torch.einsum("bgij,bgdj->bgdi", attn, kv[:, 1]).reshape(b, -1, h, w))
    return F.conv2d(torch.cat(outs, 1), m.proj.weight, m.proj.bias)


def test_clo_equals_official_code_on_window_multiples():
    m = _randomise(CloAttention(16, 16, num_heads=4, group_split=(1, 2, 1), kernel_sizes=(3, 5), window_size=2))
    x = torch.randn(2, 16, 6, 8, dtype=torch.float64)
    assert _equal64(m(x), _clo_official(x, m, F.avg_pool2d(x, 2, 2)))


def _valid_means(x, ws):
    """Mean of the real pixels of each ws x ws window (the last ones partial), by loops."""
    h, w = x.shape[2:]
    rows = [
        torch.stack([x[:, :, i : i + ws, j : j + ws].mean((2, 3)) for j in range(0, w, ws)], -1)
        for i in range(0, h, ws)
    ]
    return torch.stack(rows, -2)


@pytest.mark.parametrize("hw", [(7, 5), (1, 1), (4, 9)])
def test_clo_pools_partial_windows_over_their_pixels(hw):
    m = _randomise(CloAttention(16, 16))
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    assert torch.allclose(window_means(x, 4), _valid_means(x, 4))
    assert _equal64(m(x), _clo_official(x, m, _valid_means(x, 4)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BiLevelRoutingAttention(16, 16, n_win=2, topk=5), "topk"),
        (lambda: BiLevelRoutingAttention(16, 16, num_heads=3), "num_heads"),
        (lambda: HaloAttention(16, 16, num_heads=3), "num_heads"),
        (lambda: CloAttention(16, 16, group_split=(4, 3)), "group_split"),
        (lambda: CloAttention(16, 16, kernel_sizes=(4,)), "odd"),
    ],
)
def test_bad_arguments_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
