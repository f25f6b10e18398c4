"""The attention variant yamls: placement, build at n (and s) scale, FLOPs, fuse, weight transfer, seed yamls."""

import copy
import functools
from unittest import mock

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from models.config import ModelConfigError, load_model_yaml
from models.rebase import VARIANT_LAYOUT, place
from models.registry import REGISTRY, build_block, entries
from models.variants import (
    HEADER,
    README,
    _gflops,
    model_cost,
    orphans,
    readme_with_table,
    readme_zoo_rows,
    render,
    variant_entries,
    variant_file,
    zoo_cells,
)
from models.yolo import Model
from utils.torch_utils import exact_flops
from utils.transfer import log_transfer, transfer_weights

from conftest import captured_log, quiet_model

ZOO = {e.name: e for e in variant_entries()}  # the registry is the list: every block with a placement
VARIANTS = list(ZOO)
IMG = (64, 96)


@functools.cache
def changed_layers(variant):
    """([(index, class name)] of the rows the placement adds or swaps, whether it only inserts), from the engine."""
    entry = ZOO[variant]
    layout = load_model_yaml(VARIANT_LAYOUT)[0]
    base = layout["backbone"] + layout["head"]
    rows = place(layout, entry.name, entry.placement, VARIANT_LAYOUT)
    changed = [(i, p.row[2]) for i, p in enumerate(rows) if p.origin is None or p.row[2] != base[p.origin][2]]
    return [(i, REGISTRY[m].cls.__name__) for i, m in changed], entry.placement.kind == "insert"


def has_weights(name):
    """A block with a conv or linear layer adds multiply-adds; one without (SimAM, SGE's scalars) adds none."""
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    return any(isinstance(m, kinds) for m in build_block(name, 64).modules())


def build(cfg):
    """A fresh copy of a cached model (building is the slow part)."""
    return copy.deepcopy(quiet_model(cfg))


@functools.cache
def _base_flops():
    return exact_flops(quiet_model("yolov5n.yaml"), IMG)


def layer_outputs(model, x):
    """Every yaml layer's output for input x (eval mode)."""
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outs.__setitem__(m.i, o)) for m in model.model]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("variant", VARIANTS)
def test_placement_keeps_the_v61_layout(variant):
    base, model = quiet_model("yolov5n.yaml"), quiet_model(f"yolov5n_{variant}.yaml")
    changed, inserts_only = changed_layers(variant)
    assert [(i, type(model.model[i]).__name__) for i, _ in changed] == changed
    kept = [type(m).__name__ for m in model.model if m.i not in dict(changed)]
    assert kept == [type(m).__name__ for m in base.model if inserts_only or m.i not in dict(changed)]
    src, dst = base.model[-1], model.model[-1]
    assert [ch.in_channels for ch in dst.m] == [ch.in_channels for ch in src.m]
    for f_base, f_variant in zip(src.f, dst.f):  # Detect reads the same layer, or the block placed right after it
        read = type(model.model[f_variant]).__name__
        assert read == type(base.model[f_base]).__name__ or (f_variant, read) in changed


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b", [1, 2])
def test_variant_forward_backward(variant, b):
    model = build(f"yolov5n_{variant}.yaml").train()
    out = model(torch.randn(b, 3, *IMG))
    assert [tuple(o.shape) for o in out] == [(b, 3, IMG[0] // s, IMG[1] // s, 85) for s in (8, 16, 32)]
    sum(o.float().square().mean() for o in out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        pred, _ = model(torch.randn(1, 3, *IMG))
    assert pred.shape == (1, 3 * sum((IMG[0] // s) * (IMG[1] // s) for s in (8, 16, 32)), 85)


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_flops_count_the_attention(variant):
    model = quiet_model(f"yolov5n_{variant}.yaml")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        copy.deepcopy(model).eval()(torch.zeros(1, 3, *IMG))
    flops = exact_flops(model, IMG)
    assert isinstance(flops, int) and flops == counter.get_total_flops()
    extra = flops - _base_flops()
    assert extra > 0 if has_weights(variant) else extra == 0
    if variant == "SOCA":  # covariance bmm + 9 Newton-Schulz bmm on (256, 256) at P5 (2 x 3 positions)
        assert extra >= 2 * 256 * 256 * 6 + 9 * 2 * 256**3


def test_summary_prints_v61_and_exact_figures():
    with captured_log() as lines:
        quiet_model("yolov5n_SOCA.yaml").info(img_size=640)
    assert any(x.startswith("Model Summary:") and x.endswith("GFLOPs") for x in lines)
    assert any(x.startswith("Exact:") and "GFLOPs at 640x640" in x for x in lines)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fuse_leaves_attention_and_output_unchanged(variant):
    model = build(f"yolov5n_{variant}.yaml").eval()
    x = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        ref = model(x)[0]
        with mock.patch.object(Model, "info"):  # fuse() prints the summary; its FLOPs passes are tested elsewhere
            out = model.fuse()(x)[0]
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3)
    for i, name in changed_layers(variant)[0]:
        assert type(model.model[i]).__name__ == name


def _layer_keys(model, indices):
    return [k for k in model.state_dict() if int(k.split(".")[1]) in indices]


@pytest.mark.parametrize("variant", VARIANTS)
def test_transfer_maps_base_weights_by_structure(variant):
    base, model = quiet_model("yolov5n.yaml"), build(f"yolov5n_{variant}.yaml")
    changed, _ = changed_layers(variant)
    csd, n, total, n_new = transfer_weights(base, model)
    assert n == len(csd) == len(base.state_dict())  # every base tensor finds its place, replaced layers included
    new_keys = [k for k in _layer_keys(model, [i for i, _ in changed]) if k not in csd]
    assert total == len(model.state_dict()) and n_new == len(new_keys)
    model.load_state_dict(csd, strict=False)
    x = torch.randn(1, 3, *IMG)
    ref, out = layer_outputs(base, x), layer_outputs(model, x)
    first = changed[0][0]
    assert all(torch.equal(out[i], ref[i]) for i in range(first))
    if variant == "DoubleAttention":  # its residual projection starts at zero: the whole model is the base model
        assert torch.equal(out[len(model.model) - 1][0], ref[len(base.model) - 1][0])
    if variant == "DynamicConv":  # every expert holds the replaced Conv's kernel: any mix of them is that kernel
        mlp = {"attention.1.0.weight", "attention.1.0.bias", "attention.1.2.weight", "attention.1.2.bias"}
        assert {k.split(".", 2)[2] for k in new_keys} == mlp
        final, expected = out[len(model.model) - 1][0], ref[len(base.model) - 1][0]
        assert ((final - expected).abs() <= 1e-5 * (expected.abs() + 1)).all()


def test_transfer_other_nc_and_excluded_anchors():
    base, model = quiet_model("yolov5n.yaml"), build("yolov5n_SE.yaml")
    small = Model(dict(load_model_yaml("yolov5n_SE.yaml")[0], nc=3))
    _, n, _, _ = transfer_weights(base, small)
    assert n == len(base.state_dict()) - 6  # Detect's three 1x1 convs (weight, bias) depend on nc
    csd, n, _, _ = transfer_weights(base, model, exclude=("anchor",))
    assert n == len(base.state_dict()) - 1 and "model.25.anchors" not in csd


def test_transfer_from_real_v61_checkpoint(ref_weights, reference):
    from models.loading import load_checkpoint

    ckpt = load_checkpoint(ref_weights)
    src = (ckpt.get("ema") or ckpt["model"]).float()
    with mock.patch.object(Model, "info"):
        model = Model("yolov5n_DoubleAttention.yaml", nc=1)
    csd, n, total, n_new = transfer_weights(src, model)
    assert n == len(src.state_dict()) and (total, n_new) == (n + 8, 8)
    model.load_state_dict(csd, strict=False)
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    with torch.no_grad():
        pred = model.eval()(x)[0].numpy()
    # the A2 block starts as the identity, so the variant reproduces v6.1's own output for this checkpoint
    assert np.abs(pred - np.load(reference / "bus_output_320.npy")).max() < 1e-3


def test_transfer_log_line():
    with captured_log() as lines:
        log_transfer(349, 361, 12, "yolov5n.pt")
    assert lines == ["Transferred 349/361 items (12 new) from yolov5n.pt"]


def test_transfer_rejects_non_models():
    with pytest.raises(TypeError, match="transfer_weights: the source"):
        transfer_weights(torch.nn.Conv2d(1, 1, 1), quiet_model("yolov5n.yaml"))


def test_dynamic_temperature_through_model_epoch_update():
    model = build("yolov5n_DynamicConv.yaml")
    assert model.epoch_update(4, 5) == {"model.10.temperature": 1.0, "model.14.temperature": 1.0}  # ends at 1


def test_keep_block_with_wrong_channels_names_the_layer():
    d = copy.deepcopy(load_model_yaml("yolov5n_SE.yaml")[0])
    d["backbone"][9][3] = [512]
    with pytest.raises(ModelConfigError, match="layer 9 SE"):
        Model(d)


def test_seed_yamls_build(shared):
    seeds = shared / "seeds" / "yamls"
    for name, module in (("seed000_yolov5_SOCA.yaml", "SOCA"), ("seed004_yolov5_dynamic.yaml", "DynamicConv")):
        d, _ = load_model_yaml(str(seeds / name))
        d["depth_multiple"], d["width_multiple"] = 0.33, 0.25  # the file's layers unchanged, at n size for speed
        model = Model(d)
        assert module in {type(m).__name__ for m in model.model}
        assert model(torch.zeros(1, 3, *IMG))[0].shape[-1] == 85


@pytest.mark.slow
def test_seed_yamls_build_unchanged(shared):
    for name in ("seed000_yolov5_SOCA.yaml", "seed004_yolov5_dynamic.yaml"):
        Model(str(shared / "seeds" / "yamls" / name))


def test_seed002_sppf_kernel_fails_clearly(shared):
    path = shared / "seeds" / "yamls" / "seed002_yolov5s_SE.yaml"
    with pytest.raises(ModelConfigError) as e:
        Model(str(path))
    msg = str(e.value)
    assert path.name in msg and "layer 10" in msg and "SPPF" in msg and "512" in msg


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_s_scale(variant):
    model = Model(f"yolov5s_{variant}.yaml")
    assert model.yaml["width_multiple"] == 0.5
    out = model(torch.randn(1, 3, *IMG))
    assert out[2].shape == (1, 3, 2, 3, 85)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_exports_to_onnx_and_openvino(variant, tmp_path, monkeypatch):
    """export.py at its default opset (raised where a block needs it); onnxruntime and OpenVINO equal PyTorch."""
    import onnxruntime as ort
    import openvino as ov

    from export import run as export

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    onnx_file, ov_dir = export(cfg=f"yolov5n_{variant}.yaml", include=["onnx", "openvino"], imgsz=IMG)
    torch.manual_seed(1)  # the same random init as inside export.run
    with mock.patch.object(Model, "info"):
        model = Model(f"yolov5n_{variant}.yaml").fuse().eval()
    x = torch.rand(1, 3, *IMG)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    y = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    compiled = ov.Core().compile_model(str(next(ov_dir.glob("*.xml"))), "CPU")
    z = compiled([x.numpy()])[compiled.output(0)]
    for out, tol in ((y, 1e-4), (z, 1e-3)):  # OpenVINO's CPU plugin may run its own kernels (a looser bound)
        assert np.abs(out - ref).max() <= tol * max(np.abs(ref).max(), 1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_yamls_are_generated_from_the_registry(variant):
    assert variant_file(ZOO[variant]).read_text() == render(ZOO[variant]), "run: python -m models.variants --write"


def test_every_block_has_a_placement_and_a_readme_row_from_the_registry():
    """Name, paper and placement columns, one row per block in registration order; the costs: the slow test below."""
    assert all(e.placement is not None for e in entries(attention=True)), "a block without placement="
    assert not orphans(), "variant yamls of blocks no longer registered: python -m models.variants --write"
    rows = readme_zoo_rows(README.read_text())
    assert [r[:3] for r in rows] == [zoo_cells(e) for e in variant_entries()], "run: python -m models.variants --write"
    assert all(len(r) == len(HEADER.strip("|").split(" | ")) for r in rows)


@pytest.mark.slow
def test_readme_zoo_table_is_generated():
    """The whole table, params and exact GFLOPs added to yolov5s at 640 included (one model build per block)."""
    text = README.read_text()
    assert text == readme_with_table(text, refresh=True), "stale: python -m models.variants --write --refresh"


def test_zoo_costs_match_a_normal_build():
    """model_cost probes strides on the meta device: the same parameters and exact FLOPs as a normal build."""
    model = quiet_model("yolov5n_SOCA.yaml")
    assert model_cost("yolov5n_SOCA.yaml") == (sum(p.numel() for p in model.parameters()), exact_flops(model, 640))
    assert [_gflops(f) for f in (0, 65_536, 5_120, -236_000_000, 3_774_971_904)] == [
        "0",
        "+0.0000655",
        "+0.00000512",
        "-0.236",
        "+3.77",
    ]


def test_variant_insertion_renumbers_from_indices():
    d = load_model_yaml(str(variant_file(ZOO["SOCA"])))[0]
    rows = d["backbone"] + d["head"]
    assert rows[24] == [-1, 1, "SOCA", [1024]] and rows[25][0] == [17, 20, 24]
    base = load_model_yaml("yolov5l.yaml")[0]
    d = load_model_yaml(str(variant_file(ZOO["DynamicConv"])))[0]
    assert [r[2] for r in d["head"]] == [
        ("DynamicConv" if i in (10, 14) else r[2])
        for i, r in enumerate(base["backbone"] + base["head"])
        if i >= len(base["backbone"])
    ]


class _RealOps(TorchDispatchMode):
    """Records the largest tensor an aten op returns off the meta device."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        real = [t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.device.type != "meta"]
        self.numel = max([self.numel, *real])
        return out


def test_exact_flops_runs_no_real_arithmetic():
    model = quiet_model("yolov5n_SOCA.yaml")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with _RealOps() as ops:
        flops = exact_flops(model, 640)
    assert ops.numel <= 100 and flops > 4e9  # only small bookkeeping tensors (strides) are real; SOCA's bmm counted
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())
