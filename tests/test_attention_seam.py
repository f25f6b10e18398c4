"""SEAM, MultiSEAM: official formulas in float64, the pad rule for maps under a patch, and the BN-B1 rule."""

import pytest
import torch
import torch.nn.functional as F
from test_attention import _bn, _equal64
from test_attention_multiscale import _randomise

import models.attention as att
from models.attention.helpers import BatchNormB1


def _stage(z, stage, c, pad=1):
    """YOLO-FaceV2 Residual(DW conv -> GELU -> BN) then PW conv -> GELU -> BN."""
    dw, dw_bn = stage.dw[0], stage.dw[2]
    pw, pw_bn = stage.pw[0], stage.pw[2]
    z = _bn(F.gelu(F.conv2d(z, dw.weight, dw.bias, padding=pad, groups=c)), dw_bn) + z
    return _bn(F.gelu(F.conv2d(z, pw.weight, pw.bias)), pw_bn)


def _excite(m, y):
    """SEAM's fc: Linear(C, C/r, no bias) -> ReLU -> Linear(C/r, C, no bias) -> sigmoid, then exp."""
    fc1, fc2 = m.excite[0].weight.flatten(1), m.excite[2].weight.flatten(1)
    return torch.exp(torch.sigmoid(F.linear(F.relu(F.linear(y, fc1)), fc2)))


@pytest.mark.parametrize("n, reduction", [(1, 8), (2, 16)])
def test_seam_equals_official_code(n, reduction):
    c = 32
    m = _randomise(att.SEAM(c, c, n, reduction).double(), std=0.3)
    x = torch.randn(2, c, 7, 9, dtype=torch.float64)
    y = x
    for stage in m.mixer:
        y = _stage(y, stage, c)
    y = F.adaptive_avg_pool2d(y, 1).view(2, c)
    assert _equal64(m(x), x * _excite(m, y).view(2, c, 1, 1).expand_as(x))


def _multiseam_official(m, x):
    """MultiSEAM's official forward (maps at least one patch large)."""
    b, c = x.shape[:2]
    pooled = []
    for p, branch in zip(m.patches, m.branches):
        conv, bn = branch[0], branch[2]
        z = _bn(F.gelu(F.conv2d(x, conv.weight, conv.bias, stride=p)), bn)
        for stage in branch[3:]:
            z = _stage(z, stage, c)
        pooled.append(F.adaptive_avg_pool2d(z, 1).view(b, c))
    y = (sum(pooled) + F.adaptive_avg_pool2d(x, 1).view(b, c)) / (len(pooled) + 1)
    return x * _excite(m, y).view(b, c, 1, 1).expand_as(x)


@pytest.mark.parametrize("patches, hw", [((3, 5, 7), (9, 8)), ((6, 7, 8), (17, 13)), ((6, 7, 8), (8, 8))])
def test_multiseam_equals_official_code(patches, hw):
    c = 16
    m = _randomise(att.MultiSEAM(c, c, 1, 3, patches, 4).double(), std=0.3)
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    assert _equal64(m(x), _multiseam_official(m, x))


def test_multiseam_pads_a_map_smaller_than_a_patch():
    c = 16
    m = _randomise(att.MultiSEAM(c, c, 2, 3, (6, 7, 8)).double(), std=0.3)
    x = torch.randn(2, c, 3, 7, dtype=torch.float64)  # 3 rows: under every patch; 7 columns: under one
    b = x.shape[0]
    pooled = []
    for p, branch in zip(m.patches, m.branches):
        padded = torch.zeros(b, c, max(p, 3), max(p, 7), dtype=x.dtype)
        padded[:, :, :3, :7] = x
        z = _bn(F.gelu(F.conv2d(padded, branch[0].weight, branch[0].bias, stride=p)), branch[2])
        for stage in branch[3:]:
            z = _stage(z, stage, c)
        pooled.append(z.mean((2, 3)))
    y = (sum(pooled) + x.mean((2, 3))) / 4
    assert _equal64(m(x), x * _excite(m, y)[..., None, None])


def test_multiseam_trains_at_batch_one_with_one_value_per_channel():
    m = att.MultiSEAM(16, 16).train()
    x = torch.randn(1, 16, 6, 7, requires_grad=True)  # patch 3: a 2x2 map; patches 5 and 7: one position
    stats = {id(bn): bn.running_mean.clone() for bn in m.modules() if isinstance(bn, BatchNormB1)}
    m(x).sum().backward()
    after = {id(bn): bn.running_mean for bn in m.modules() if isinstance(bn, BatchNormB1)}
    changed = [not torch.equal(stats[k], after[k]) for k in stats]
    assert changed == [True] * 3 + [False] * 6  # the patch-3 branch's 3 BatchNorms update, one-value ones keep
    assert torch.isfinite(x.grad).all()


def test_bn_b1_rule():
    bn = BatchNormB1(3).train()
    x = torch.randn(1, 3, 1, 1)
    assert torch.equal(bn(x), bn.eval()(x)) and torch.equal(bn.running_mean, torch.zeros(3))
    bn.train()(torch.randn(2, 3, 1, 1))
    assert not torch.equal(bn.running_mean, torch.zeros(3))  # two values per channel: ordinary BatchNorm


def test_multiseam_parameter_cost():
    c = 32
    patch_convs = sum(b[0].weight.numel() for b in att.MultiSEAM(c, c, patch_size=(6, 7, 8)).branches)
    assert patch_convs == 149 * c * c
    assert sum(b[0].weight.numel() for b in att.MultiSEAM(c, c).branches) == 83 * c * c
