"""The v6.1 yaml modules that only the hub configs or users' yamls use: Ghost, transformer, C3SPP, experimental ones."""

import math

import pytest
import torch
import torch.nn as nn

from models.common import (
    C3,
    C3SPP,
    C3TR,
    SPP,
    C3Ghost,
    Contract,
    Expand,
    GhostBottleneck,
    GhostConv,
    TransformerBlock,
    TransformerLayer,
)
from models.config import ModelConfigError
from models.experimental import CrossConv, MixConv2d, Sum
from models.loading import load_checkpoint
from models.registry import REGISTRY, Channels
from models.yolo import Model
from utils.checkpoints import save_checkpoint

V61_PATHS = {
    "GhostConv": "models.common",
    "GhostBottleneck": "models.common",
    "C3Ghost": "models.common",
    "C3TR": "models.common",
    "C3SPP": "models.common",
    "Contract": "models.common",
    "Expand": "models.common",
    "CrossConv": "models.experimental",
    "Sum": "models.experimental",
    "MixConv2d": "models.experimental",
}


def x_(c=16, h=8, w=8, b=2):
    return torch.randn(b, c, h, w)


def zero_bn(bn):
    """Make BN output 0 (then SiLU(0) = 0) so residual paths can be seen alone."""
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)


def test_registered_under_v61_names_paths_and_channel_rules():
    rules = {
        "C3Ghost": Channels.REPEAT,
        "C3TR": Channels.REPEAT,
        "C3SPP": Channels.CONV,
        "Sum": Channels.SUM,
        "Contract": Channels.SPACE_TO_DEPTH,
        "Expand": Channels.DEPTH_TO_SPACE,
        "GhostConv": Channels.CONV,
    }
    for name, module in V61_PATHS.items():
        assert REGISTRY[name].cls.__module__ == module  # checkpoints pickle this path
        assert REGISTRY[name].channels == rules.get(name, Channels.CONV)
    assert TransformerLayer.__module__ == TransformerBlock.__module__ == "models.common"


def test_ghost_conv_is_primary_maps_then_their_depthwise_ghosts():
    m = GhostConv(16, 32, 3, 2).eval()
    x = x_()
    y = m(x)
    primary = m.cv1(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], primary) and torch.equal(y[:, 16:], m.cv2(primary))
    assert m.cv2.conv.weight.shape == (16, 1, 5, 5)  # cheap depth-wise 5x5
    with pytest.raises(ValueError, match="c2 must be even"):
        GhostConv(16, 33)


def test_ghost_bottleneck_shortcuts():
    x = x_()
    same = GhostBottleneck(16, 16).eval()
    assert isinstance(same.shortcut, nn.Identity) and isinstance(same.conv[1], nn.Identity)
    assert torch.allclose(same(x), same.conv(x) + x)
    down = GhostBottleneck(16, 32, 3, 2).eval()
    assert down(x).shape == (2, 32, 4, 4) and down.conv[1].conv.stride == (2, 2)
    widen = GhostBottleneck(16, 32).eval()  # v6.1 fails here; the paper's projection shortcut makes it work
    assert widen(x).shape == (2, 32, 8, 8)


def test_c3_variants_swap_only_the_inner_stack():
    ghost, tr, spp = C3Ghost(16, 32, 2), C3TR(16, 32, 3), C3SPP(16, 32, [5, 9])
    assert all(isinstance(m, C3) for m in (ghost, tr, spp))
    assert [type(b) for b in ghost.m] == [GhostBottleneck, GhostBottleneck]
    assert isinstance(tr.m, TransformerBlock) and len(tr.m.tr) == 3 and tr.m.tr[0].ma.num_heads == 4
    assert isinstance(spp.m, SPP) and [p.kernel_size for p in spp.m.m] == [5, 9]
    x = x_()
    for m in (ghost, tr, spp):
        assert m.eval()(x).shape == (2, 32, 8, 8)


def test_transformer_block_is_equivariant_to_moving_positions():
    """Attention plus a feature-derived position embedding: flipping the map flips the output."""
    block = TransformerBlock(16, 16, 4, 2).eval()
    x = x_(h=4, w=6)
    with torch.no_grad():
        assert torch.allclose(block(x.flip(-1)), block(x).flip(-1), rtol=1e-5, atol=1e-5)
        assert block(x).shape == x.shape
    widen = TransformerBlock(8, 16, 4, 1)
    assert isinstance(widen.conv, nn.Module) and widen(x_(c=8)).shape == (2, 16, 8, 8)
    layer = TransformerLayer(16, 4)
    assert {n for n, _ in layer.named_children()} == {"q", "k", "v", "ma", "fc1", "fc2"}


def test_cross_conv_factorises_kxk_and_adds_its_input():
    m = CrossConv(16, 16, 5, 1, shortcut=True)
    assert m.cv1.conv.weight.shape[-2:] == (1, 5) and m.cv2.conv.weight.shape[-2:] == (5, 1)
    zero_bn(m.cv2.bn)
    x = x_()
    assert torch.equal(m.eval()(x), x)
    assert CrossConv(16, 32, 3, 2)(x).shape == (2, 32, 4, 4)


def test_sum_plain_and_weighted():
    a, b, c = x_(), x_(), x_()
    assert torch.equal(Sum(3)([a, b, c]), a + b + c)
    weighted = Sum(3, True)
    w = [2 * torch.sigmoid(torch.tensor(-0.5)), 2 * torch.sigmoid(torch.tensor(-1.0))]
    assert torch.allclose(weighted([a, b, c]), a + b * w[0] + c * w[1])
    weighted([a, b, c]).sum().backward()
    assert weighted.w.grad is not None and weighted.w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="built for 3 inputs, got 2"):
        Sum(3)([a, b])


@pytest.mark.parametrize("c2,k", [(16, (1, 3)), (30, (3, 5, 7)), (70, (1, 3, 5))])
def test_mixconv_splits_channels_over_kernels(c2, k):
    equal = MixConv2d(16, c2, k)
    sizes = [m.out_channels for m in equal.m]
    assert sum(sizes) == c2 and max(sizes) - min(sizes) <= 1
    assert [m.kernel_size[0] for m in equal.m] == list(k)
    params = MixConv2d(16, c2, k, 1, False)
    sizes = [m.out_channels for m in params.m]
    assert sum(sizes) == c2
    ideal = [c2 / ki**2 / sum(1 / kj**2 for kj in k) for ki in k]  # c_i * k_i^2 equal for every group
    assert all(abs(s - t) < 1 for s, t in zip(sizes, ideal))
    assert all(m.groups == math.gcd(16, m.out_channels) for m in equal.m)


def test_mixconv_residual_and_stride():
    m = MixConv2d(16, 16, (3, 5))
    zero_bn(m.bn)
    x = x_()
    assert torch.equal(m.eval()(x), x)
    assert MixConv2d(16, 24, (3, 5), 2)(x).shape == (2, 24, 4, 4)
    with pytest.raises(ValueError, match="positive odd"):
        MixConv2d(16, 16, (2, 3))
    with pytest.raises(ValueError, match=r"7 output channels cannot be split over kernels \[1, 3, 5\]"):
        MixConv2d(16, 7, (1, 3, 5), 1, False)  # equal weights leave the 5x5 group no channel


def test_contract_and_expand_are_inverse_space_to_depth():
    x = x_(c=3, h=8, w=12)
    y = Contract(2)(x)
    assert y.shape == (2, 12, 4, 6)
    for i in range(2):
        for j in range(2):
            assert torch.equal(y[:, (i * 2 + j) * 3 : (i * 2 + j + 1) * 3], x[:, :, i::2, j::2])
    assert torch.equal(Expand(2)(y), x)
    z = x_(c=18, h=3, w=5)
    assert torch.equal(Contract(3)(Expand(3)(z)), z)
    with pytest.raises(ValueError, match="divisible by the gain 2"):
        Contract(2)(x_(h=5))
    with pytest.raises(ValueError, match="gain must be an int"):
        Expand(0)


def tiny_yaml(**edits):
    """A yolov5n-width model that uses every module no hub config uses."""
    d = {
        "nc": 2,
        "depth_multiple": 0.33,
        "width_multiple": 0.25,
        "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
        "backbone": [
            [-1, 1, "Conv", [64, 3, 2]],  # 0 /2, 16 ch
            [-1, 1, "Contract", [2]],  # 1 /4, 64 ch
            [-1, 1, "MixConv2d", [256, [1, 3, 5]]],  # 2 /4, 64 ch
            [-1, 1, "CrossConv", [256, 3, 2]],  # 3 /8, 64 ch
            [-1, 1, "C3SPP", [512, [5, 9]]],  # 4 /8, 128 ch
            [-1, 1, "GhostBottleneck", [512, 3, 2]],  # 5 /16, 128 ch
            [-1, 1, "Expand", [2]],  # 6 /8, 32 ch
            [-1, 1, "GhostConv", [512, 1, 1]],  # 7 /8, 128 ch
            [[-1, 4], 1, "Sum", [2, True]],  # 8 /8, 128 ch
        ],
        "head": [[[8, 5], 1, "Detect", ["nc", "anchors"]]],
    }
    for i, row in edits.items():
        d["backbone"][int(i[1:])] = row
    return d


def test_tiny_yaml_with_every_module_builds_runs_and_round_trips(tmp_path):
    model = Model(tiny_yaml())
    assert model.stride.tolist() == [8.0, 16.0]
    widths, types = [], []
    hooks = [m.register_forward_hook(lambda m, i, o: widths.append(o.shape[1:])) for m in model.model[:-1]]
    out = model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert [tuple(w) for w in widths] == [
        (16, 32, 32),
        (64, 16, 16),
        (64, 16, 16),
        (64, 8, 8),
        (128, 8, 8),
        (128, 4, 4),
        (32, 8, 8),
        (128, 8, 8),
        (128, 8, 8),
    ]
    assert [tuple(o.shape) for o in out] == [(1, 3, 8, 8, 7), (1, 3, 4, 4, 7)]
    types = {m.type.split(".")[-1]: m.type.rsplit(".", 1)[0] for m in model.model}
    assert all(types[n] == path for n, path in V61_PATHS.items() if n in types)
    save_checkpoint({"model": model}, tmp_path / "tiny.pt")
    loaded = load_checkpoint(tmp_path / "tiny.pt")["model"].eval()
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"r6": [-1, 1, "Expand", [3]]}, "layer 6 Expand [3]: input channels 128 are not divisible by gain^2 = 9"),
        ({"r8": [[-1, 3], 1, "Sum", [2]]}, "layer 8 Sum [2]: adds its inputs element-wise, but they have different"),
        ({"r1": [-1, 6, "Contract", [2]]}, "layer 1 Contract [2]: cannot be repeated (number 2)"),
        ({"r8": [[-1, 4], 1, "Sum", [3, True]]}, "layer 8 Sum failed on input [(1, 128, 32, 32), (1, 128, 32, 32)]"),
        ({"r2": [-1, 1, "MixConv2d", [256, [2, 4]]]}, "MixConv2d: kernel sizes must be positive odd ints"),
    ],
)
def test_bad_module_rows_fail_with_one_line_naming_the_layer(edit, message):
    with pytest.raises(ModelConfigError) as e:
        Model(tiny_yaml(**edit))
    assert message in str(e.value) and "\n" not in str(e.value)
