"""Block-level tests of models/attention: shapes, dtypes, batch independence, ONNX, and each block's math."""

import copy
import inspect
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import models.attention as att
from models.attention.channel import eca_kernel_size
from models.attention.soca import centre_crop, centred_covariance, newton_schulz_sqrt
from models.registry import Channels, build_block, entries

C = 16
ENTRIES = {e.name: e for e in entries(attention=True)}  # the registry is the list of blocks
BLOCKS = list(ENTRIES)
KEEP = [n for n, e in ENTRIES.items() if e.channels == Channels.KEEP]
CONV_C2, CONV_K, CONV_S = 24, 3, 2  # conv replacements are built like Conv(c1, c2, k, s)


def build(name):
    return build_block(name, C) if name in KEEP else build_block(name, C, CONV_C2, CONV_K, CONV_S)


def out_shape(name, b, h, w):
    c2, s = (C, 1) if name in KEEP else (CONV_C2, CONV_S)
    return (b, c2, -(-h // s), -(-w // s))


def close(a, b, rel):
    return (a.float() - b.float()).abs().max().item() <= rel * max(b.abs().max().item(), 1.0)


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("b", [1, 4])
def test_forward_backward_rectangular(name, b):
    m = build(name).train()
    x = torch.randn(b, C, 20, 13, requires_grad=True)
    y = m(x)
    assert y.shape == out_shape(name, b, 20, 13)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("name", BLOCKS)
def test_trains_at_batch_one_on_a_small_map(name):
    m = build(name).train()
    x = torch.randn(1, C, 2, 3, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_batch_items_independent(name):
    m = build(name).eval()
    x = torch.randn(4, C, 12, 9)
    with torch.no_grad():
        together, alone = m(x), torch.cat([m(x[i : i + 1]) for i in range(4)])
    assert close(together, alone, 1e-5)


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 5)])
def test_tiny_maps(name, hw):
    m = build(name).eval()
    with torch.no_grad():
        y = m(torch.randn(1, C, *hw))
    assert y.shape == out_shape(name, 1, *hw) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_half_on_cpu(name):
    m = build(name).eval()
    x = torch.randn(2, C, 20, 13)
    with torch.no_grad():
        ref = m(x)
        y = copy.deepcopy(m).half()(x.half())
    assert y.dtype == torch.float16 and close(y, ref, 2e-2)


@pytest.mark.parametrize("name", BLOCKS)
def test_bfloat16_autocast(name):
    m = build(name).eval()
    x = torch.randn(2, C, 20, 13)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
    assert close(y, ref, 6e-2)


@pytest.mark.parametrize("name", BLOCKS)
def test_double_follows_input_dtype(name):
    m = build(name).eval()
    x = torch.randn(2, C, 20, 13)
    with torch.no_grad():
        ref = m(x)
        y = copy.deepcopy(m).double()(x.double())
    assert y.dtype == torch.float64 and close(y, ref, 1e-5)


def onnx_matches(m, path, dynamo, opset=12):
    """Export with a dynamic batch at batch 2, run onnxruntime at batch 3, compare with PyTorch."""
    import onnxruntime as ort

    m.eval()
    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo else {"dynamic_axes": {"x": {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.randn(2, C, 20, 13),),
            str(path),
            opset_version=opset,
            dynamo=dynamo,
            input_names=["x"],
            output_names=["y"],
            **kw,
        )
    x = torch.randn(3, C, 20, 13)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = m(x).numpy()
    return y.shape == ref.shape and np.abs(y - ref).max() <= 1e-4


@pytest.mark.parametrize("name", BLOCKS)
def test_onnx_torchscript_exporter(name, tmp_path):
    """At export.py's default opset 12, or the lowest the block declares it needs."""
    opset = max(12, ENTRIES[name].opset or 12)
    assert onnx_matches(build(name), tmp_path / f"{name}.onnx", dynamo=False, opset=opset)


@pytest.mark.slow
@pytest.mark.parametrize("name", BLOCKS)
def test_onnx_dynamo_exporter(name, tmp_path):
    assert onnx_matches(build(name), tmp_path / f"{name}.onnx", dynamo=True, opset=max(17, ENTRIES[name].opset or 17))


@pytest.mark.parametrize("name", KEEP)
def test_keep_blocks_reject_other_c2(name):
    with pytest.raises(ValueError, match=f"{name}.*c2"):
        ENTRIES[name].cls(C, 2 * C)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_reduction_named(bad):
    with pytest.raises(ValueError, match="SE: reduction must be an int"):
        att.SE(C, C, bad)


def test_names_aliases_and_docstrings():
    from models import common

    for name, entry in ENTRIES.items():
        for alias in entry.aliases:
            assert getattr(att, alias) is getattr(att, name) is getattr(common, alias) is entry.cls
        assert entry.cls.__doc__ and entry.cls.__doc__.strip().splitlines()[0].endswith(").")  # names the paper
        assert list(inspect.signature(entry.cls).parameters)[:2] == ["c1", "c2"]
    assert set(att.__all__) == {n for e in ENTRIES.values() for n in (e.name, *e.aliases)}


class MaxOutput(TorchDispatchMode):
    """Records the largest tensor any aten op produces."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), (func, tuple(t.shape))
        return out


def test_soca_memory_linear_in_positions():
    b, c, m = 2, 64, 160 * 160
    block = att.SOCA(c, c).to("meta")  # meta tensors: shapes only, so an M x M op shows without allocating 2.6 GB
    x = torch.randn(b, c, 160, 160, device="meta", requires_grad=True)
    with MaxOutput() as rec:
        block(x).sum().backward()
    assert rec.numel <= b * c * m, f"an op built {rec.op}, larger than the (B, C, M) features"


def test_soca_covariance_equals_centring_matrix_form():
    x = torch.randn(2, 5, 30, dtype=torch.float64)
    m = x.shape[2]
    centring = torch.eye(m, dtype=x.dtype) - torch.ones(m, m, dtype=x.dtype) / m
    assert torch.allclose(centred_covariance(x), x @ centring @ x.transpose(1, 2) / m)


def test_newton_schulz_square_root():
    q, _ = torch.linalg.qr(torch.randn(3, 6, 6, dtype=torch.float64))
    lam = torch.rand(3, 6, dtype=torch.float64) + 0.5
    a = q @ torch.diag_embed(lam) @ q.transpose(1, 2)
    root = q @ torch.diag_embed(lam.sqrt()) @ q.transpose(1, 2)
    assert torch.allclose(newton_schulz_sqrt(a, iters=40), root, atol=1e-8)
    five = newton_schulz_sqrt(a)  # the block's 5 iterations already land close for a well-conditioned matrix
    assert (five - root).abs().max() < 0.05 and not torch.allclose(five, root, atol=1e-8)


def test_soca_fp16_computes_in_fp32():
    m = att.SOCA(C, C).eval()
    x = torch.randn(2, C, 20, 13) * 30
    d32 = m.descriptor(x)
    d16 = m.descriptor(x.half())
    assert d16.dtype == torch.float16 and torch.isfinite(d16).all() and close(d16, d32, 1e-2)


def test_soca_centre_crop():
    x = torch.arange(1003 * 4 * 2, dtype=torch.float32).view(1, 2, 1003, 4)
    assert torch.equal(centre_crop(x), x[:, :, 1:1001])
    assert torch.equal(centre_crop(x, max_side=2), x[:, :, 500:502, 1:3])


def test_eca_kernel_size():
    assert [eca_kernel_size(c) for c in (16, 64, 256, 512, 1024)] == [3, 3, 5, 5, 5]


def test_double_attention_matches_explicit_sums():
    m = att.DoubleAttention(4, 4, c_m=3, c_n=2).double()
    torch.nn.init.normal_(m.proj.weight)
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    a, bm, v = (conv(x)[0].flatten(1) for conv in (m.conv_a, m.conv_b, m.conv_v))
    att_b = bm.exp() / bm.exp().sum(1, keepdim=True)  # each of the c_n maps: a distribution over the 15 positions
    att_v = v.exp() / v.exp().sum(0, keepdim=True)  # each position: a distribution over the c_n descriptors
    g = torch.stack([torch.stack([(a[i] * att_b[j]).sum() for j in range(2)]) for i in range(3)])
    z = torch.stack([sum(g[:, j] * att_v[j, p] for j in range(2)) for p in range(15)], 1)
    ref = x + m.proj(z.view(1, 3, 3, 5))
    assert torch.allclose(m(x), ref)


def test_double_attention_starts_as_identity():
    x = torch.randn(2, C, 6, 5)
    assert torch.equal(att.DoubleAttention(C, C)(x), x)


@pytest.mark.parametrize("make", [lambda: att.SKAttention(C, C, branches=3), lambda: att.SplitAttn(C, 24, 3, 1, 2, 2)])
def test_uniform_selection_averages_branches(make):
    m = make().eval()
    last = m.fc[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(2, C, 8, 7)
    with torch.no_grad():
        if isinstance(m, att.SKAttention):
            mean = torch.stack([branch(x) for branch in m.branches]).mean(0)
        else:
            mean = m.conv(x).view(2, m.radix, m.c2, 8, 7).mean(1)
        assert torch.allclose(m(x), mean, atol=1e-6)


def test_split_attention_radix_one_uses_sigmoid():
    m = att.SplitAttn(C, C, 3, 1, 1, 1).eval()
    torch.nn.init.zeros_(m.fc[-1].weight)
    torch.nn.init.zeros_(m.fc[-1].bias)
    x = torch.randn(1, C, 5, 5)
    with torch.no_grad():
        assert torch.allclose(m(x), 0.5 * m.conv(x), atol=1e-6)


def test_sge_needs_divisible_groups():
    with pytest.raises(ValueError, match="SGE: channels"):
        att.SGE(12, 12, 8)


def test_simam_energy_weights():
    x = torch.ones(1, 1, 3, 3)
    x[0, 0, 1, 1] = 3.0
    mu = 11 / 9
    d_centre, d_other = (3 - mu) ** 2, (1 - mu) ** 2
    var = (d_centre + 8 * d_other) / 8  # sum over the other n = h*w - 1 neurons' normaliser
    inv_energy = [d / (4 * (var + 1e-4)) + 0.5 for d in (d_centre, d_other)]
    w = att.SimAM(1, 1)(x) / x
    expected = torch.sigmoid(torch.tensor(inv_energy))
    assert torch.allclose(w[0, 0, 1, 1], expected[0]) and torch.allclose(w[0, 0, 0, 0], expected[1])
    assert w[0, 0, 1, 1] > w[0, 0, 0, 0]  # the distinctive neuron (lowest energy) is weighted most


@pytest.mark.parametrize("g", [1, 2])
def test_dynamic_conv_kernel_mix_equals_output_mix(g):
    m = att.DynamicConv(C, 24, 3, 2, None, g).eval()
    x = torch.randn(3, C, 11, 8)
    a = (m.attention(x).flatten(1) / m.temperature).softmax(1)
    assert torch.allclose(m.mix_kernels(x, a), m.mix_outputs(x, a), atol=1e-5)


def test_dynamic_conv_temperature_schedule_and_persistence():
    m = att.DynamicConv(C, C)
    taus = [m.epoch_update(e, 300)["temperature"] for e in (0, 3, 9, 10, 40)]
    assert taus == [30.0, 30 - 29 * 3 / 9, 1.0, 1.0, 1.0] and m.temperature == 1.0
    assert [m.epoch_update(e, 5)["temperature"] for e in range(5)] == [30 - 29 * e / 4 for e in range(5)]
    assert m.epoch_update(0, 1)["temperature"] == 1.0  # a 1-epoch run trains at the end of the schedule
    m.epoch_update(2, 300)
    assert pickle.loads(pickle.dumps(m)).temperature == copy.deepcopy(m).temperature == m.temperature == 30 - 29 * 2 / 9
    with pytest.raises(ValueError, match="DynamicConv.epoch_update"):
        m.epoch_update(-1, 300)


def test_dynamic_conv_temperature_sharpens_attention():
    m = att.DynamicConv(C, C).eval()
    x = torch.randn(1, C, 6, 6)
    logits = m.attention(x).flatten(1)
    m.epoch_update(10, 300)
    soft, sharp = (logits / 30).softmax(1), (logits / m.temperature).softmax(1)
    assert sharp.max() > soft.max()


def test_seed_dynamic_conv2d_arguments():
    m = att.Dynamic_conv2d(32, 16, 1, 1)
    assert m(torch.randn(2, 32, 9, 6)).shape == (2, 16, 9, 6) and m.weight.shape == (4, 16, 32, 1, 1)


@pytest.mark.slow  # one spawned process per block and level, each importing torch and the zoo
def test_speed_benchmark_tiny(capsys):
    from benchmarks import attention_speed

    attention_speed.main(["--img", "32", "--scale", "n", "--runs", "1", "--warmup", "1", "--blocks", "SOCA", "ECA"])
    table = capsys.readouterr().out.strip().splitlines()[-5:]
    assert table[0].startswith("| block | P3 time | P3 memory")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| SE", "| SOCA", "| ECA"]
    assert table[2].count(" ms") == 3 and table[3].count("x") >= 3


# The official implementations, transcribed as formulas on the same weights (float64, 1e-5 of |ref| + 1)
def _rand_bn(bn):
    """Give a BatchNorm2d trained-looking statistics and affine parameters; return it in eval mode."""
    c = bn.num_features
    bn.running_mean.copy_(torch.randn(c, dtype=bn.running_mean.dtype))
    bn.running_var.copy_(torch.rand(c, dtype=bn.running_var.dtype) + 0.5)
    torch.nn.init.normal_(bn.weight)
    torch.nn.init.normal_(bn.bias)
    return bn.eval()


def _bn(y, bn):
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _equal64(ours, official):
    return (ours - official).abs().max().item() <= 1e-5 * (official.abs().max().item() + 1)


def _fold_bn(conv, bn):
    """Fold an official bias-free conv + eval BatchNorm into our biased conv; return the official conv weight."""
    w = conv.weight.detach().clone()
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, *[1] * (w.dim() - 1)))
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
    return w


def test_sge_equals_official_code():
    m = att.SGE(16, 16, groups=4).double().eval()
    torch.nn.init.normal_(m.weight, std=3.0)  # trained gammas
    torch.nn.init.normal_(m.bias)
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    b, c, h, w = x.shape
    xg = x.view(b * 4, -1, h, w)
    t = (xg * xg.mean((2, 3), keepdim=True)).sum(1, keepdim=True).view(b * 4, -1)
    t = t - t.mean(1, keepdim=True)
    t = t / (t.std(1, keepdim=True) + 1e-5)
    t = (t.view(b, 4, h, w) * m.weight + m.bias).view(b * 4, 1, h, w)
    official = (xg * torch.sigmoid(t)).view(b, c, h, w)
    assert _equal64(m(x), official)


def _scnet_calibrated(x, m, k2_bn, pooling_r):
    """SCNet's SCConv on the calibrated half: k4(k3(x) * sigmoid(x + up(k2(x)))), k2 = AvgPool2d(r) floor, conv, BN."""
    k2 = _bn(F.conv2d(F.avg_pool2d(x, pooling_r, pooling_r), m.k2.weight, None, 1, 1), k2_bn)
    gate = torch.sigmoid(x + F.interpolate(k2, x.shape[2:]))
    k3 = _bn(F.conv2d(x, m.k3.conv.weight, None, 1, 1), m.k3.bn)
    return _bn(F.conv2d(k3 * gate, m.k4.conv.weight, None, 1, 1), m.k4.bn)


def test_scconv_equals_scnet_with_floor_pooling():
    m = att.SCConv(16, 16, 3, 1).double().eval()
    k2_bn = _rand_bn(torch.nn.BatchNorm2d(8).double())
    for bn in (m.k3.bn, m.k4.bn):
        _rand_bn(bn)
    w = _fold_bn(m.k2, k2_bn)  # SCNet's k2 BatchNorm folded into our k2 conv
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64)  # P5 at --img 320: floor and ceil pooling differ
    ours = m.k4(m.calibrate(x[:, :8]))
    m.k2.weight.data = w
    official = F.silu(_scnet_calibrated(x[:, :8], m, k2_bn, 4))  # SiLU: the activation of Conv
    assert _equal64(ours, official)


def test_cbam_equals_official_code_with_batchnorm():
    m = att.CBAM(16, 16, reduction=4).double().eval()
    _rand_bn(m.spatial[1])
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    fc1, fc2 = m.mlp[0], m.mlp[2]

    def mlp(v):  # Flatten, Linear, ReLU, Linear
        hidden = F.relu(F.linear(v.flatten(1), fc1.weight.flatten(1), fc1.bias))
        return F.linear(hidden, fc2.weight.flatten(1), fc2.bias)

    x1 = x * torch.sigmoid(mlp(F.avg_pool2d(x, x.shape[2:])) + mlp(F.max_pool2d(x, x.shape[2:])))[..., None, None]
    pooled = torch.cat((torch.max(x1, 1)[0].unsqueeze(1), torch.mean(x1, 1).unsqueeze(1)), 1)  # ChannelPool
    official = x1 * torch.sigmoid(_bn(F.conv2d(pooled, m.spatial[0].weight, None, 1, 3), m.spatial[1]))
    assert _equal64(m(x), official)


def test_eca_equals_official_code_and_paper_kernel_size():
    for c in range(1, 2049):
        t = math.log2(c) / 2 + 1 / 2
        nearest_odd = 2 * math.floor(t / 2) + 1  # the paper's |t|_odd (ties at even t go up)
        assert eca_kernel_size(c) == nearest_odd, c
    assert {eca_kernel_size(c) for c in range(1, 8)} == {1} and eca_kernel_size(8) == 3
    m = att.ECA(64, 64).double()
    x = torch.randn(2, 64, 5, 3, dtype=torch.float64)
    y = F.adaptive_avg_pool2d(x, 1)
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), m.conv.weight, padding=1).transpose(-1, -2).unsqueeze(-1)
    assert _equal64(m(x), x * torch.sigmoid(y).expand_as(x))


def test_coordatt_equals_official_code():
    m = att.CoordAtt(16, 16).double().eval()
    _rand_bn(m.squeeze[1])
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    h, w = x.shape[2:]
    x_h, x_w = F.adaptive_avg_pool2d(x, (None, 1)), F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)
    y = torch.cat([x_h, x_w], dim=2)
    y = _bn(F.conv2d(y, m.squeeze[0].weight, m.squeeze[0].bias), m.squeeze[1])
    y = y * F.relu6(y + 3) / 6  # h_swish
    x_h, x_w = torch.split(y, [h, w], dim=2)
    a_h = torch.sigmoid(F.conv2d(x_h, m.conv_h.weight, m.conv_h.bias))
    a_w = torch.sigmoid(F.conv2d(x_w.permute(0, 1, 3, 2), m.conv_w.weight, m.conv_w.bias))
    assert _equal64(m(x), x * a_w * a_h)


def test_simam_equals_official_code():
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    official = x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + 1e-4)) + 0.5)
    assert _equal64(att.SimAM(4, 4)(x), official)


def test_se_equals_official_code():
    m = att.SE(32, 32).double()
    x = torch.randn(2, 32, 5, 3, dtype=torch.float64)
    fc1, fc2 = m.fc[0], m.fc[2]
    y = F.relu(F.linear(x.mean((2, 3)), fc1.weight.flatten(1), fc1.bias))
    assert _equal64(m(x), x * torch.sigmoid(F.linear(y, fc2.weight.flatten(1), fc2.bias))[..., None, None])


def test_dynamic_conv_equals_official_aggregation():
    m = att.DynamicConv(16, 8, 3, 1).double().eval()
    m.epoch_update(3, 300)
    x = torch.randn(3, 16, 7, 6, dtype=torch.float64)
    logits = m.attention[1](F.adaptive_avg_pool2d(x, 1)).view(3, -1)
    a = F.softmax(logits / m.temperature, 1)
    weight = torch.mm(a, m.weight.view(m.K, -1)).view(-1, 16, 3, 3)  # per-sample kernels, batch as groups
    y = F.conv2d(x.view(1, -1, 7, 6), weight, None, 1, 1, groups=3).view(3, 8, 7, 6)
    assert _equal64(m(x), F.silu(_bn(y, m.bn)))


def test_scse_equals_official_formula():
    m = att.scSE(16, 16).double().eval()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    fc1, fc2, sse = m.cse[1][0], m.cse[1][2], m.sse[0]
    z = F.relu(F.linear(x.mean((2, 3)), fc1.weight.flatten(1), fc1.bias))  # cSE: GAP, FC C -> C/r, ReLU, FC, sigmoid
    channel = torch.sigmoid(F.linear(z, fc2.weight.flatten(1), fc2.bias))[..., None, None]
    spatial = torch.sigmoid(torch.einsum("bchw,c->bhw", x, sse.weight.flatten()) + sse.bias)[:, None]  # sSE: C -> 1
    assert _equal64(m(x), x * channel + x * spatial)


def test_split_attention_equals_official_resnest_code():
    c1, c2, g, radix = 16, 24, 2, 2
    m = att.SplitAttn(c1, c2, 3, 2, g, radix, reduction=4, min_channels=8).double().eval()
    _rand_bn(m.conv.bn)
    bn1 = _rand_bn(torch.nn.BatchNorm2d(m.fc[0].out_channels).double())
    fc1_weight = _fold_bn(m.fc[0], bn1)  # ResNeSt's fc1 (bias) + bn1 equals one biased conv in eval mode
    fc1_bias = torch.randn(m.fc[0].out_channels, dtype=torch.float64)
    with torch.no_grad():
        m.fc[0].bias.add_(fc1_bias * bn1.weight / (bn1.running_var + bn1.eps).sqrt())
    x = torch.randn(2, c1, 9, 7, dtype=torch.float64)
    y = F.silu(_bn(F.conv2d(x, m.conv.conv.weight, None, 2, 1, groups=g * radix), m.conv.bn))  # SiLU: Conv's act
    splited = torch.split(y, c2, dim=1)
    gap = F.adaptive_avg_pool2d(sum(splited), 1)
    gap = F.relu(_bn(F.conv2d(gap, fc1_weight, fc1_bias, groups=g), bn1))
    atten = F.conv2d(gap, m.fc[2].weight, m.fc[2].bias, groups=g)
    atten = F.softmax(atten.view(2, g, radix, -1).transpose(1, 2), dim=1).reshape(2, -1, 1, 1)  # rSoftMax
    official = sum(a * s for a, s in zip(torch.split(atten, c2, dim=1), splited))
    assert _equal64(m(x), official)


def test_split_attention_radix_one_equals_official_code():
    m = att.SplitAttn(16, 16, 3, 1, 1, 1, min_channels=8).double().eval()
    _rand_bn(m.conv.bn)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    y = F.silu(_bn(F.conv2d(x, m.conv.conv.weight, None, 1, 1), m.conv.bn))
    gap = F.relu(F.conv2d(F.adaptive_avg_pool2d(y, 1), m.fc[0].weight, m.fc[0].bias))
    assert _equal64(m(x), torch.sigmoid(F.conv2d(gap, m.fc[2].weight, m.fc[2].bias)) * y)


def test_double_attention_equals_official_formula():
    m = att.DoubleAttention(16, 16, c_m=6, c_n=4).double().eval()
    torch.nn.init.normal_(m.proj.weight)
    torch.nn.init.normal_(m.proj.bias)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    b, c, h, w = x.shape
    a, bm, v = (F.conv2d(x, cv.weight, cv.bias).view(b, -1, h * w) for cv in (m.conv_a, m.conv_b, m.conv_v))
    g = torch.bmm(a, F.softmax(bm, dim=-1).permute(0, 2, 1))  # gather: G = A softmax(B)^T, (b, c_m, c_n)
    z = g.matmul(F.softmax(v, dim=1))  # distribute: each position's c_n weights mix the descriptors
    official = x + F.conv2d(z.view(b, -1, h, w), m.proj.weight, m.proj.bias)  # our output conv and residual
    assert _equal64(m(x), official)


def test_sk_attention_equals_official_sknet_code():
    m = att.SKAttention(16, 16, reduction=4, min_channels=8, branches=3, g=2).double().eval()
    for branch in m.branches:
        _rand_bn(branch[1])
    bn = _rand_bn(torch.nn.BatchNorm2d(m.fc[0].out_channels).double())
    fc_weight = _fold_bn(m.fc[0], bn)  # SKNet's fc: bias-free conv, BN, ReLU
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    feats = []
    for i, branch in enumerate(m.branches):  # our dilated 3x3 branches, conv-BN-ReLU
        conv = F.conv2d(x, branch[0].weight, None, 1, i + 1, i + 1, groups=2)
        feats.append(F.relu(_bn(conv, branch[1])))
    feats = torch.stack(feats, 1)
    feats_z = F.relu(_bn(F.conv2d(feats.sum(1).mean((2, 3), keepdim=True), fc_weight), bn))
    fcs = zip(m.fc[2].weight.split(16), m.fc[2].bias.split(16))  # one FC d -> C per branch
    attention = torch.stack([F.conv2d(feats_z, wi, bi) for wi, bi in fcs], 1).softmax(dim=1)
    assert _equal64(m(x), (feats * attention).sum(1))
