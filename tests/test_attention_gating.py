"""Formula tests of the gating, excitation and polarized blocks: each equals a transcription of its official code.

Float64, on the block's own (randomised) weights, to 1e-5 of the reference's largest value; the generic tests of
tests/test_attention.py run over these blocks too.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64, _rand_bn, onnx_matches

import models.attention as att
from models.attention.gating import ConvNorm
from models.attention.helpers import BatchNorm1dB1


def _randomise(m):
    """Normal weights and biases everywhere, trained-looking BN statistics; float64, eval mode."""
    m = m.double().eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            _rand_bn(mod)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=p[0].numel() ** -0.5 if p.dim() > 1 else 0.5)
    return m


def _x(b=2, c=16, h=7, w=5):
    return torch.randn(b, c, h, w, dtype=torch.float64)


def _shuffle(t, groups):
    """Channel shuffle by an explicit index: output channel j * groups + g reads input channel g * (C / groups) + j."""
    c = t.shape[1]
    idx = torch.tensor([g * (c // groups) + j for j in range(c // groups) for g in range(groups)])
    return t[:, idx]


@pytest.mark.parametrize("group", [False, True])
def test_gam_equals_paper_formula(group):
    m = _randomise(att.GAM(16, 16, group=group))
    x = _x()
    lin1, lin2 = m.channel[0], m.channel[2]
    a = x.permute(0, 2, 3, 1)  # the permutation: channels last, then the 2-layer MLP on every pixel
    a = F.linear(F.relu(F.linear(a, lin1.weight.flatten(1), lin1.bias)), lin2.weight.flatten(1), lin2.bias)
    x1 = x * torch.sigmoid(a.permute(0, 3, 1, 2))
    g = 4 if group else 1
    c1, c2 = m.spatial[0], m.spatial[1]
    s = F.relu(_bn(F.conv2d(x1, c1.conv.weight, c1.conv.bias, 1, 3, 1, g), c1.bn))
    s = torch.sigmoid(_bn(F.conv2d(s, c2.conv.weight, c2.conv.bias, 1, 3, 1, g), c2.bn))
    assert _equal64(m(x), x1 * (_shuffle(s, 4) if group else s))


def test_gam_group_needs_divisible_widths():
    with pytest.raises(ValueError, match="GAM: reduced channels"):
        att.GAM(32, 32, reduction=8, group=True)  # 4 reduced channels in 8 groups


def test_shuffle_attention_equals_official_sa_layer():
    m = _randomise(att.ShuffleAttention(16, 16, groups=2))
    x = _x()
    b, c, h, w = x.shape
    out = []
    for xg in x.reshape(b * 2, c // 2, h, w):  # official: (B*G, C/G, H, W), a channel and a spatial half each
        x0, x1 = xg[:4], xg[4:]
        y0 = x0 * torch.sigmoid(m.cweight[0] * F.adaptive_avg_pool2d(x0, 1) + m.cbias[0])
        mu, var = x1.mean((1, 2), keepdim=True), x1.var((1, 2), unbiased=False, keepdim=True)
        gn = (x1 - mu) / (var + m.gn.eps).sqrt() * m.gn.weight[:, None, None] + m.gn.bias[:, None, None]
        out.append(torch.cat((y0, x1 * torch.sigmoid(m.sweight[0] * gn + m.sbias[0]))))
    official = _shuffle(torch.stack(out).reshape(b, c, h, w), 2)
    assert _equal64(m(x), official)


def test_shuffle_attention_channels_must_fill_groups():
    with pytest.raises(ValueError, match="ShuffleAttention: channels .* 2 \\* groups"):
        att.ShuffleAttention(64, 64, groups=64)  # the official 64 groups need 128 channels


def test_effective_se_equals_official_ese():
    m = _randomise(att.EffectiveSE(16, 16))
    x = _x()
    z = F.conv2d(F.adaptive_avg_pool2d(x, 1), m.fc.weight, m.fc.bias)
    assert _equal64(m(x), x * F.relu6(z + 3.0) / 6.0)  # Hsigmoid


def _zgate(t, gate):
    """Official AttentionGate on a (B, A, P, Q) tensor: ZPool (max, mean over A), 7x7 conv, BN, sigmoid."""
    z = torch.cat((torch.max(t, 1)[0].unsqueeze(1), torch.mean(t, 1).unsqueeze(1)), 1)
    return t * torch.sigmoid(_bn(F.conv2d(z, gate.conv.weight, None, 1, 3), gate.bn))


@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_attention_equals_official_code(no_spatial):
    m = _randomise(att.TripletAttention(16, 16, no_spatial=no_spatial))
    x = _x(h=9, w=4)  # C, H and W all differ, so a misoriented kernel shows
    y1 = _zgate(x.permute(0, 2, 1, 3).contiguous(), m.cw).permute(0, 2, 1, 3).contiguous()
    y2 = _zgate(x.permute(0, 3, 2, 1).contiguous(), m.hc).permute(0, 3, 2, 1).contiguous()
    official = 0.5 * (y1 + y2) if no_spatial else 1 / 3 * (_zgate(x, m.hw) + y1 + y2)
    assert _equal64(m(x), official)


def _psa_maps(m, x):
    """The paper's channel-only and spatial-only maps, by einsum over explicit weight matrices."""
    w = {k: getattr(m, k).weight.flatten(1) for k in ("ch_wv", "ch_wq", "ch_wz", "sp_wv", "sp_wq")}
    v = torch.einsum("oc,bchw->bohw", w["ch_wv"], x)
    p = torch.einsum("oc,bchw->bohw", w["ch_wq"], x).flatten(1).softmax(1).view(x.shape[0], 1, *x.shape[2:])
    u = torch.einsum("oc,bc->bo", w["ch_wz"], (v * p).sum((2, 3)))
    ln = (u - u.mean(1, keepdim=True)) / (u.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    a_ch = torch.sigmoid(ln * m.ln.weight + m.ln.bias)[..., None, None]
    q = torch.einsum("oc,bchw->bo", w["sp_wq"], x) / (x.shape[2] * x.shape[3])
    s = torch.einsum("bo,oc,bchw->bhw", q.softmax(1), w["sp_wv"], x)
    return a_ch, torch.sigmoid(s)[:, None]


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_polarized_self_attention_equals_paper_equations(layout):
    m = _randomise(att.PolarizedSelfAttention(16, 16, layout))
    x = _x()
    a_ch, a_sp = _psa_maps(m, x)
    if layout == "parallel":
        official = a_ch * x + a_sp * x
    else:
        z = a_ch * x
        official = _psa_maps(m, z)[1] * z
    assert _equal64(m(x), official)


def test_parnet_attention_equals_official_repvgg_sse_block():
    m = _randomise(att.ParNetAttention(16, 16))
    x = _x()
    identity = _bn(x, m.bn)
    sse = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(identity, 1), m.sse.weight))
    dense = _bn(F.conv2d(x, m.conv3.conv.weight, None, 1, 1), m.conv3.bn)
    one = _bn(F.conv2d(x, m.conv1.conv.weight), m.conv1.bn)
    assert _equal64(m(x), F.silu(dense + one + identity * sse))


def test_nam_equals_official_channel_att():
    m = _randomise(att.NAM(16, 16))
    x = _x()
    weight_bn = m.bn.weight.data.abs() / torch.sum(m.bn.weight.data.abs())
    y = torch.mul(weight_bn, _bn(x, m.bn).permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2).contiguous()
    assert _equal64(m(x), torch.sigmoid(y) * x)


def _nam_weight_grad(m, x, detach):
    m.bn.weight.grad = None
    gamma = (m.bn.weight.detach() if detach else m.bn.weight).abs()
    (x * torch.sigmoid(_bn(x, m.bn) * (gamma / gamma.sum()).view(1, -1, 1, 1))).sum().backward()
    return m.bn.weight.grad


def test_nam_channel_weights_carry_no_gradient():
    m = _randomise(att.NAM(16, 16))
    x = _x()
    m(x).sum().backward()
    ours = m.bn.weight.grad
    assert torch.allclose(ours, _nam_weight_grad(m, x, detach=True))
    assert not torch.allclose(ours, _nam_weight_grad(m, x, detach=False))


@pytest.mark.parametrize("fuse", ["sum", "mul"])
def test_bam_equals_official_code(fuse):
    m = _randomise(att.BAM(16, 16, reduction=4, fuse=fuse))
    x = _x(h=9, w=6)
    c = F.linear(F.avg_pool2d(x, x.shape[2:]).flatten(1), m.fc1.weight, m.fc1.bias)  # kernel (H, W): rectangular-safe
    c = F.linear(F.relu(_bn(c, m.bn1)), m.fc2.weight, m.fc2.bias)[..., None, None].expand_as(x)
    s = x
    for i, unit in enumerate(m.spatial[:3]):
        pad, dil = (4, 4) if i else (0, 1)  # a 1x1 reduction, then the two dilated 3x3 convs
        s = F.relu(_bn(F.conv2d(s, unit.conv.weight, unit.conv.bias, 1, pad, dil), unit.bn))
    s = F.conv2d(s, m.spatial[3].weight, m.spatial[3].bias).expand_as(x)
    att_map = torch.sigmoid(c + s if fuse == "sum" else c * s)
    assert _equal64(m(x), x * (1 + att_map))


def test_bn_b1_rule_uses_frozen_running_statistics():
    bn = _rand_bn(BatchNorm1dB1(6)).train()
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    one = torch.randn(1, 6)
    assert torch.allclose(bn(one), _bn(one, bn))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    two = torch.randn(2, 6)
    assert torch.allclose(bn(two), F.batch_norm(two, None, None, bn.weight, bn.bias, True))
    assert not torch.equal(bn.running_mean, mean)  # a real batch: batch statistics, running ones updated


def test_bam_trains_at_batch_one():
    m = att.BAM(16, 16).train()
    y = m(torch.randn(1, 16, 1, 1, requires_grad=True))
    y.sum().backward()
    assert torch.isfinite(y).all() and all(p.grad is not None for p in m.parameters())


def _nearest(g, size):
    """Legacy nearest resize: output row i reads input row floor(i * in / out), in integer arithmetic."""
    rows = [i * g.shape[2] // size[0] for i in range(size[0])]
    cols = [j * g.shape[3] // size[1] for j in range(size[1])]
    return g[:, :, rows][:, :, :, cols]


def _window_mean(x, e):
    """Average over the window of kernel 2e-1, stride e, padding e-1, counting only real pixels, by loops."""
    h, w = x.shape[2:]
    rows = []
    for i in range(-(-h // e)):
        r0, r1 = max(i * e - e + 1, 0), min(i * e + e, h)
        rows.append([x[:, :, r0:r1, max(j * e - e + 1, 0) : min(j * e + e, w)].mean((2, 3)) for j in range(-(-w // e))])
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


@pytest.mark.parametrize("extent", [0, 1, 2, 4])
def test_gather_excite_free_equals_official(extent):
    x = _x(h=11, w=7)
    g = x.mean((2, 3), keepdim=True) if extent == 0 else _window_mean(x, extent)
    assert _equal64(att.GatherExcite(16, 16, "free", extent)(x), x * torch.sigmoid(_nearest(g, x.shape[2:])))


@pytest.mark.parametrize("variant", ["param", "param_mlp"])
@pytest.mark.parametrize("extent", [2, 8])
def test_gather_excite_param_equals_official(variant, extent):
    m = _randomise(att.GatherExcite(16, 16, variant, extent))
    x = _x(h=11, w=7)
    g, stages = x, [u for u in m.gather if isinstance(u, ConvNorm)]
    for i, unit in enumerate(stages):
        g = _bn(F.conv2d(g, unit.conv.weight, None, 2, 1, 1, 16), unit.bn)
        g = F.relu(g) if i < len(stages) - 1 or variant == "param_mlp" else g
    if variant == "param_mlp":
        fc1, fc2 = m.gather[-3], m.gather[-1]
        assert fc1.out_channels == 1  # round(16 / 16)
        g = F.conv2d(F.relu(F.conv2d(g, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    assert g.shape[2:] == (-(-11 // extent), -(-7 // extent))
    assert _equal64(m(x), x * torch.sigmoid(_nearest(g, x.shape[2:])))


@pytest.mark.parametrize("bad", [("param", 0), ("param_mlp", 6), ("free", -1), ("gather", 2)])
def test_gather_excite_rejects_bad_variant_or_extent(bad):
    with pytest.raises(ValueError, match="GatherExcite"):
        att.GatherExcite(16, 16, *bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: att.GatherExcite(16, 16, "param_mlp", 8),
        lambda: att.GatherExcite(16, 16, "free", 4),
        lambda: att.PolarizedSelfAttention(16, 16, "sequential"),
        lambda: att.GAM(16, 16, group=True),
        lambda: att.BAM(16, 16, fuse="mul"),
        lambda: att.TripletAttention(16, 16, no_spatial=True),
    ],
)
def test_non_default_configurations_export_and_run_half(make, tmp_path):
    m = make().eval()
    assert onnx_matches(m, tmp_path / "m.onnx", dynamo=False)
    x = torch.randn(2, 16, 20, 13)
    with torch.no_grad():
        ref, y = m(x), copy.deepcopy(m).half()(x.half())
    assert y.dtype == torch.float16 and (y.float() - ref).abs().max() <= 2e-2 * max(ref.abs().max(), 1.0)
