"""The self-attention and context blocks against transcriptions of their official formulas, and their size rules.

CrissCrossAttention, S2Attention, GlobalContext, ACmix, CoTAttention, MHSA, DANet, NonLocal: each official formula is
written out here independently (loops, einsum, unfold) and run on the block's own randomised weights in float64.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_attention import _bn, _equal64, _rand_bn

import models.attention as att
from models.attention.helpers import BatchNormB1
from models.attention.stable import reflect_index, reflect_pad

D = torch.float64


def _randomise(m):
    """Every BatchNorm with trained-looking statistics, every parameter away from its (zero or identity) init."""
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            _rand_bn(mod)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def _conv(x, conv, stride=1, padding=0, groups=1):
    return F.conv2d(x, conv.weight, conv.bias, stride, padding, 1, groups)


# CrissCrossAttention (CCNet)
def _cca_official(x, m):
    q, k, v = _conv(x, m.query), _conv(x, m.key), _conv(x, m.value)
    _, _, h, w = x.shape
    out = torch.zeros_like(x)
    for i, j in itertools.product(range(h), range(w)):
        keys = [(i2, j) for i2 in range(h) if i2 != i] + [(i, j2) for j2 in range(w)]  # H + W - 1, self once
        logits = torch.stack([(q[:, :, i, j] * k[:, :, a, b]).sum(1) for a, b in keys], 1)
        weights = logits.softmax(1)
        out[:, :, i, j] = sum(weights[:, t, None] * v[:, :, a, b] for t, (a, b) in enumerate(keys))
    return m.gamma * out + x


@pytest.mark.parametrize("hw", [(4, 5), (1, 4)])
def test_criss_cross_equals_official_formula(hw):
    m = _randomise(att.CrissCrossAttention(16, 16).double())
    x = torch.randn(2, 16, *hw, dtype=D)
    assert _equal64(m(x), _cca_official(x, m))


def test_criss_cross_recurrence_shares_weights():
    m = _randomise(att.CrissCrossAttention(16, 16, recurrence=2).double())
    x = torch.randn(2, 16, 3, 4, dtype=D)
    assert _equal64(m(x), _cca_official(_cca_official(x, m), m))
    assert torch.equal(att.CrissCrossAttention(16, 16)(x.float()), x.float())  # gamma = 0: the identity at start


# S2Attention (S2-MLPv2, External-Attention's operator with Jittor-MLP's fixes)
def _s2_official(x, m):
    xl = x.permute(0, 2, 3, 1)  # channels last, as the reference
    c = xl.shape[-1]
    z = F.linear(xl, m.mlp1.weight.flatten(1), m.mlp1.bias)
    z1, z2, z3 = z[..., :c], z[..., c : 2 * c], z[..., 2 * c :]
    q0, q1, q2, q3 = (slice(a, b) for a, b in [(0, c // 4), (c // 4, c // 2), (c // 2, 3 * c // 4), (3 * c // 4, c)])
    s1, s2 = z1.clone(), z2.clone()  # out of place: borders keep their own values
    s1[:, 1:, :, q0], s1[:, :-1, :, q1] = z1[:, :-1, :, q0], z1[:, 1:, :, q1]
    s1[:, :, 1:, q2], s1[:, :, :-1, q3] = z1[:, :, :-1, q2], z1[:, :, 1:, q3]
    s2[:, :, 1:, q0], s2[:, :, :-1, q1] = z2[:, :, :-1, q0], z2[:, :, 1:, q1]
    s2[:, 1:, :, q2], s2[:, :-1, :, q3] = z2[:, :-1, :, q2], z2[:, 1:, :, q3]
    a = (s1 + s2 + z3).sum((1, 2))  # a sum over branches and positions, not a mean
    hat = F.linear(F.gelu(F.linear(a, m.split1.weight)), m.split2.weight).reshape(-1, 3, c).softmax(1)
    o = hat[:, None, None, 0] * s1 + hat[:, None, None, 1] * s2 + hat[:, None, None, 2] * z3
    return F.linear(o, m.mlp2.weight.flatten(1), m.mlp2.bias).permute(0, 3, 1, 2)


@pytest.mark.parametrize("c, hw", [(12, (5, 4)), (10, (3, 6)), (16, (1, 3))])
def test_s2_attention_equals_official_formula_at_any_width(c, hw):
    m = _randomise(att.S2Attention(c, c).double())
    x = torch.randn(2, c, *hw, dtype=D)
    assert _equal64(m(x), _s2_official(x, m))


def test_s2_attention_residual_is_x_plus_s2_of_layernorm():
    m = _randomise(att.S2Attention(12, 12, residual=True).double())
    x = torch.randn(2, 12, 4, 5, dtype=D)
    xl = x.permute(0, 2, 3, 1)
    normed = (xl - xl.mean(-1, keepdim=True)) / (xl.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    normed = normed * m.norm.weight + m.norm.bias
    assert _equal64(m(x), x + _s2_official(normed.permute(0, 3, 1, 2), m))


def test_s2_attention_fp16_split_sum_in_fp32():
    m = att.S2Attention(16, 16).eval()
    x = (torch.randn(1, 16, 40, 40) * 30).half()  # the branch sums over 3 * 1600 positions overflow FP16
    with torch.no_grad():
        y16 = m.half()(x)
        ref = m.float()(x.float())
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert (y16.float() - ref).abs().max() <= 1e-2 * ref.abs().max()


# GlobalContext (GCNet)
def _gc_official(x, m):
    if m.mask is None:
        ctx = x.mean((2, 3))
    else:
        logits = torch.einsum("bchw,c->bhw", x, m.mask.weight.flatten()) + m.mask.bias
        a = logits.flatten(1).exp() / logits.flatten(1).exp().sum(1, keepdim=True)
        ctx = torch.einsum("bcn,bn->bc", x.flatten(2), a)

    def transform(t):
        hidden = F.linear(ctx, t[0].weight.flatten(1), t[0].bias)
        mu, var = hidden.mean(1, keepdim=True), hidden.var(1, unbiased=False, keepdim=True)
        hidden = F.relu((hidden - mu) / (var + 1e-5).sqrt() * t[1].weight.flatten() + t[1].bias.flatten())
        return F.linear(hidden, t[3].weight.flatten(1), t[3].bias)[..., None, None]

    out = x if m.mul is None else x * torch.sigmoid(transform(m.mul))
    return out if m.add is None else out + transform(m.add)


@pytest.mark.parametrize("pooling, fusion", [("att", "add"), ("att", "mul"), ("avg", "both"), ("att", "both")])
def test_global_context_equals_official_formula(pooling, fusion):
    m = _randomise(att.GlobalContext(16, 16, reduction=4, pooling=pooling, fusion=fusion).double())
    x = torch.randn(2, 16, 5, 4, dtype=D)
    assert _equal64(m(x), _gc_official(x, m))


def test_global_context_add_starts_as_identity():
    x = torch.randn(2, 16, 5, 4)
    assert torch.equal(att.GlobalContext(16, 16)(x), x)


# ACmix
def _numpy_reflect(t, p):
    rows, cols = (torch.from_numpy(np.pad(np.arange(n), p, mode="reflect")) for n in t.shape[-2:])
    return t[..., rows, :][..., cols]


def _acmix_official(x, m, s, pad=lambda t, p: F.pad(t, [p] * 4, mode="reflect")):
    """ACmix's forward with unfold on ReflectionPad2d maps; stride: every s-th query (our rule, ceil sizes)."""
    b, _, h, w = x.shape
    head, d, c2, n = m.head, m.d, m.c2, m.k_att
    q, k, v = _conv(x, m.qkv).split(c2, 1)
    loc = torch.stack(
        (torch.linspace(-1, 1, w, dtype=D).repeat(h, 1), torch.linspace(-1, 1, h, dtype=D)[:, None].repeat(1, w))
    )
    pe = _conv(loc[None], m.conv_p)  # (1, d, H, W)
    ho, wo = -(-h // s), -(-w // s)

    def unfold(t):
        return F.unfold(pad(t, n // 2), n, stride=s).view(t.shape[0], d, n * n, ho, wo)

    q_att = q.reshape(b * head, d, h, w)[..., ::s, ::s] * d**-0.5
    uk, uv, upe = unfold(k.reshape(b * head, d, h, w)), unfold(v.reshape(b * head, d, h, w)), unfold(pe)
    logits = (q_att.unsqueeze(2) * (uk + pe[..., ::s, ::s].unsqueeze(2) - upe)).sum(1)
    out_att = (logits.softmax(1).unsqueeze(1) * uv).sum(2).view(b, c2, ho, wo)
    f = torch.cat([t.reshape(b, head, d, h * w) for t in (q, k, v)], 1)  # (B, 3 heads, d, N)
    g = torch.einsum("jt,btcn->bjcn", m.fc.weight.flatten(1), f).permute(0, 2, 1, 3).reshape(b, -1, h, w)
    out_conv = _conv(g, m.dep_conv, s, m.k // 2, groups=d)
    return m.rate1 * out_att + m.rate2 * out_conv


@pytest.mark.parametrize("c1, c2, hw, s", [(8, 16, (6, 7), 1), (8, 8, (8, 6), 2), (8, 8, (7, 5), 2)])
def test_acmix_equals_official_formula(c1, c2, hw, s):
    m = _randomise(att.ACmix(c1, c2, 3, s).double())
    x = torch.randn(2, c1, *hw, dtype=D)
    y = m(x)
    assert y.shape == (2, c2, -(-hw[0] // s), -(-hw[1] // s)) and _equal64(y, _acmix_official(x, m, s))


def test_acmix_conv_path_starts_as_shift_and_sum():
    m = att.ACmix(8, 8).double()  # head 4, d 2: group c reads inputs [9c, 9c + 9), writes outputs [4c, 4c + 4)
    t = torch.randn(2, 18, 5, 4, dtype=D)
    tp = F.pad(t, (1, 1, 1, 1))
    for o in range(8):
        ref = sum(tp[:, (o // 4) * 9 + j, j // 3 : j // 3 + 5, j % 3 : j % 3 + 4] for j in range(9))
        assert torch.allclose(m.dep_conv(t)[:, o], ref)


def test_reflect_pad_equals_reflection_pad_and_numpy_reflect_beyond_it():
    for n, pad in itertools.product(range(1, 9), range(6)):
        assert reflect_index(n, pad) == np.pad(np.arange(n), pad, mode="reflect").tolist()  # numpy mirrors again
        x = torch.randn(1, 2, n, n + 1, dtype=D)
        if pad < n:
            assert torch.equal(reflect_pad(x, pad), F.pad(x, [pad] * 4, mode="reflect"))


def test_acmix_small_map_attends_to_the_repeated_reflection():
    m = _randomise(att.ACmix(8, 8).double())  # pad 3 on a 2x3 map: past ReflectionPad2d, numpy's reflect mirrors again
    x = torch.randn(2, 8, 2, 3, dtype=D)
    assert _equal64(m(x), _acmix_official(x, m, 1, pad=_numpy_reflect))


# CoTAttention (CoTNet's CotLayer)
def _cot_official(x, m):
    b, c, h, w = x.shape
    k, g8 = m.k, c // 8
    k1 = F.relu(_bn(F.conv2d(x, m.key[0].weight, None, 1, k // 2, 1, 4), m.key[1]))
    y = F.relu(_bn(F.conv2d(torch.cat([x, k1], 1), m.embed[0].weight), m.embed[1]))
    y = _conv(y, m.embed[3]).view(b, g8, -1)
    y = (y - y.mean(2, keepdim=True)) / (y.var(2, unbiased=False, keepdim=True) + 1e-5).sqrt()  # GroupNorm(C/8)
    y = y.view(b, -1, h, w) * m.embed[4].weight[:, None, None] + m.embed[4].bias[:, None, None]
    wt = y.view(b, g8, k * k, h, w)
    vp = F.pad(_bn(F.conv2d(x, m.value[0].weight), m.value[1]), [k // 2] * 4)
    agg = torch.zeros_like(x)
    for ch, ky, kx in itertools.product(range(c), range(k), range(k)):  # channel ch uses weight group ch mod C/8
        agg[:, ch] += wt[:, ch % g8, ky * k + kx] * vp[:, ch, ky : ky + h, kx : kx + w]
    k2 = F.silu(_bn(agg, m.bn))
    gap = (k2 + k1).mean((2, 3))
    se1, bn1, se2 = m.se[0], m.se[1], m.se[3]
    t = F.relu(_bn(F.linear(gap, se1.weight.flatten(1), se1.bias)[..., None, None], bn1)).flatten(1)
    a = F.linear(t, se2.weight.flatten(1), se2.bias).view(b, c, 2).softmax(2)
    return k2 * a[..., 0, None, None] + k1 * a[..., 1, None, None]


@pytest.mark.parametrize("k", [3, 5])
def test_cot_equals_official_formula(k):
    m = _randomise(att.CoTAttention(16, 16, k).double())
    x = torch.randn(2, 16, 5, 6, dtype=D)
    assert _equal64(m(x), _cot_official(x, m))


def test_batchnorm_b1_uses_running_statistics_only_for_one_value_per_channel():
    bn = _rand_bn(BatchNormB1(4)).train()
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    one = torch.randn(1, 4, 1, 1)
    assert torch.allclose(bn(one), _bn(one, bn)) and torch.equal(bn.running_mean, mean)
    two = torch.randn(2, 4, 1, 1)
    assert torch.allclose(bn(two), F.batch_norm(two, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    assert not torch.equal(bn.running_var, var)


# MHSA (BoTNet)
def _rel_to_abs(x):
    """(B, L, 2L - 1) relative logits -> (B, L, L) absolute [i, j] = x[i, j - i + L - 1]: pad, reshape, slice."""
    b, n, _ = x.shape
    flat = torch.cat([x, x.new_zeros(b, n, 1)], 2).reshape(b, -1)
    flat = torch.cat([flat, flat.new_zeros(b, n - 1)], 1)
    return flat.reshape(b, n + 1, 2 * n - 1)[:, :n, n - 1 :]


def _relative_logits_1d(q, rel):
    """q (B, heads, X, Y, d) -> (B, heads, X, Y, Y') logits of the offsets along Y, as the BoTNet reference."""
    b, heads, nx, ny, _ = q.shape
    logits = torch.einsum("bnxyd,md->bnxym", q, rel).reshape(-1, ny, 2 * ny - 1)
    return _rel_to_abs(logits).reshape(b, heads, nx, ny, ny)


def _mhsa_official(x, m, rel_h, rel_w):
    b, c, h, w = x.shape
    heads, d = m.heads, m.d
    q, k, v = (t.reshape(b, heads, d, h, w).permute(0, 1, 3, 4, 2) for t in F.conv2d(x, m.qkv.weight).split(c, 1))
    q = q * d**-0.5
    logits = torch.einsum("bnyxd,bnpqd->bnyxpq", q, k)
    logits = logits + _relative_logits_1d(q, rel_w)[:, :, :, :, None, :]  # (B, heads, y, x, -, x')
    logits = logits + _relative_logits_1d(q.transpose(2, 3), rel_h).permute(0, 1, 3, 2, 4)[..., None]
    a = logits.reshape(b, heads, h * w, h * w).softmax(-1)
    return torch.einsum("bnuv,bnvd->bndu", a, v.reshape(b, heads, h * w, d)).reshape(b, c, h, w)


def test_mhsa_equals_botnet_reference_on_its_map():
    m = _randomise(att.MHSA(16, 16, heads=4, h0=5, w0=3).double())
    x = torch.randn(2, 16, 5, 3, dtype=D)
    assert _equal64(m(x), _mhsa_official(x, m, m.rel_h, m.rel_w))


def test_mhsa_smaller_map_uses_the_table_centre():
    m = _randomise(att.MHSA(16, 16, heads=2, h0=5, w0=4).double())
    x = torch.randn(2, 16, 3, 2, dtype=D)
    assert _equal64(m(x), _mhsa_official(x, m, m.rel_h[2:7], m.rel_w[2:5]))


def test_mhsa_larger_map_clips_offsets():
    m = _randomise(att.MHSA(8, 8, heads=2, h0=2, w0=3).double())  # built for 2x3, run on 4x6
    x = torch.randn(1, 8, 4, 6, dtype=D)
    h, w, d = 4, 6, m.d
    q, k, v = (t.reshape(2, d, h, w) for t in F.conv2d(x, m.qkv.weight).split(8, 1))
    q = q * d**-0.5
    out = torch.zeros(2, d, h, w, dtype=D)
    for y, xx in itertools.product(range(h), range(w)):
        logits = torch.zeros(2, h, w, dtype=D)
        for y2, x2 in itertools.product(range(h), range(w)):
            r = m.rel_h[min(max(y2 - y + 1, 0), 2)] + m.rel_w[min(max(x2 - xx + 2, 0), 4)]
            logits[:, y2, x2] = (q[:, :, y, xx] * (k[:, :, y2, x2] + r)).sum(1)
        a = logits.flatten(1).softmax(1)
        out[:, :, y, xx] = (v.flatten(2) * a[:, None]).sum(2)
    assert _equal64(m(x), out.reshape(1, 8, h, w))


# DANet
def _pam_official(x, m):
    b, c, h, w = x.shape
    q, k, v = (_conv(x, cv).flatten(2) for cv in (m.query, m.key, m.value))
    energy = torch.einsum("bcn,bcm->bnm", q, k)
    a = energy.exp() / energy.exp().sum(-1, keepdim=True)
    return m.gamma * torch.einsum("bcm,bnm->bcn", v, a).view(b, c, h, w) + x


def _cam_official(x, m):
    f = x.flatten(2)
    energy = torch.einsum("bin,bjn->bij", f, f)
    energy_new = energy.max(-1, keepdim=True)[0].expand_as(energy) - energy
    return m.gamma * torch.bmm(F.softmax(energy_new, -1), f).view(x.shape) + x


def test_danet_equals_official_head():
    m = _randomise(att.DANet(32, 32).double())
    x = torch.randn(2, 32, 5, 4, dtype=D)

    def cbr(t, seq):
        return F.relu(_bn(F.conv2d(t, seq[0].weight, None, 1, 1), seq[1]))

    s = cbr(_pam_official(cbr(x, m.position[0]), m.position[1]), m.position[2])
    t = cbr(_cam_official(cbr(x, m.channel[0]), m.channel[1]), m.channel[2])
    assert _equal64(m(x), _conv(s + t, m.out[1]))  # Dropout2d is the identity in eval mode


def test_danet_cam_fp16_energy_in_fp32():
    cam = att.DANet(16, 16).channel[1]
    nn.init.ones_(cam.gamma)
    x = (torch.randn(1, 16, 20, 13) * 30).half()  # X X^T entries reach ~2e5 > FP16's 65504
    with torch.no_grad():
        y16, ref = cam.half()(x), cam.float()(x.float())
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert (y16.float() - ref).abs().max() <= 1e-2 * ref.abs().max()


# NonLocal (video-nonlocal-net, embedded Gaussian, in 2D)
def _nonlocal_official(x, m, pool):
    b, c, h, w = x.shape
    xp = x[..., : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).amax((3, 5)) if pool else x
    theta, phi, g = _conv(x, m.theta).flatten(2), _conv(xp, m.phi).flatten(2), _conv(xp, m.g).flatten(2)
    f = torch.einsum("bcn,bcm->bnm", theta, phi) * theta.shape[1] ** -0.5
    y = torch.einsum("bnm,bcm->bcn", f.softmax(-1), g).reshape(b, -1, h, w)
    return _bn(_conv(y, m.out), m.bn) + x


@pytest.mark.parametrize("hw, sub_sample", [((7, 5), True), ((6, 4), False), ((1, 5), True)])
def test_nonlocal_equals_official_formula(hw, sub_sample):
    m = _randomise(att.NonLocal(16, 16, sub_sample).double())
    x = torch.randn(2, 16, *hw, dtype=D)
    assert _equal64(m(x), _nonlocal_official(x, m, sub_sample and min(hw) >= 2))  # under 2 pixels: no pooling


def test_nonlocal_starts_as_identity():
    x = torch.randn(2, 16, 6, 5)
    assert torch.equal(att.NonLocal(16, 16).eval()(x), x)
