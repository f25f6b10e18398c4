"""Every YOLOv5 v6.1 models/hub config: per-layer table, summary line, state_dict, strides and output shape."""

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from models.config import MODELS_DIR, ModelConfigError, _read_yaml, load_model_yaml, resolve_cfg
from models.placement import AFTER_FIRST_C3, AFTER_LAST_TWO_C3, BEFORE_SPPF, HEAD_1X1_CONVS
from models.rebase import compose_variant
from models.variants import variant_entries
from models.yolo import Model

from conftest import captured_log

REF = Path(__file__).parent / "data" / "reference" / "yolov5_v6.1_hub_models.json"  # copy of ../shared/reference's
HUB = json.loads(REF.read_text())
FAST = ["yolov3-tiny", "yolov5-p34", "yolov5s-ghost", "yolov5s-transformer", "yolov5n6", "yolov5s6"]
CONFIGS = [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in sorted(HUB)]


@lru_cache(maxsize=1)  # the large configs take up to 0.6 GB each: keep one
def built(name):
    """(eval model, log lines) for a hub config at nc 80."""
    with captured_log() as lines:
        model = Model(f"{name}.yaml")
    return model.eval(), tuple(lines)


def test_every_v61_hub_config_is_shipped():
    assert sorted(p.stem for p in (MODELS_DIR / "hub").glob("*.yaml")) == sorted(HUB)
    assert len(HUB) == 17


@pytest.mark.parametrize("name", CONFIGS)
def test_hub_config_equals_v61(name):
    ref = HUB[name]
    model, lines = built(name)
    assert [ln for ln in lines if ln[:3].strip().isdigit()] == ref["layer_table"]
    assert [ln for ln in lines if ln.startswith("Model Summary")] == [ref["summary"]]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["n_params"]
    assert model.stride.tolist() == ref["stride"]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 256))[0]
    assert list(out.shape) == ref["output_shape_256"]
    assert torch.isfinite(out).all()


def test_cfg_names_resolve_into_hub_like_v61(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_cfg("yolov5s6.yaml") == (MODELS_DIR / "hub" / "yolov5s6.yaml", None)
    assert resolve_cfg("models/hub/yolov3-tiny.yaml")[0] == MODELS_DIR / "hub" / "yolov3-tiny.yaml"
    assert resolve_cfg("yolov5s.yaml")[0] == MODELS_DIR / "yolov5s.yaml"  # models/ first, as before
    local = tmp_path / "yolov5s6.yaml"
    local.write_text((MODELS_DIR / "hub" / "yolov5n6.yaml").read_text())
    assert resolve_cfg("yolov5s6.yaml")[0].resolve() == local  # a file in the current folder wins


def test_autoanchor_configs_start_from_placeholder_anchors():
    model, _ = built("yolov5-p34")
    detect = model.model[-1]
    assert detect.nl == 2 and detect.na == 3
    pixels = detect.anchors * detect.stride.view(-1, 1, 1)
    assert torch.equal(pixels[0].flatten(), torch.arange(6.0))  # `anchors: 3` -> [0..5] per level, as v6.1


VARIANTS = [e.name for e in variant_entries()]
V3 = {b for b in HUB if b.startswith("yolov3")}
# the hub bases each placement cannot find its landmark in: v3 has no SPPF and no C3, the ghost model C3Ghost/GhostConv
LACKS = {
    BEFORE_SPPF: V3,
    AFTER_FIRST_C3: V3 | {"yolov5s-ghost"},
    AFTER_LAST_TWO_C3: V3 | {"yolov5s-ghost"},
    HEAD_1X1_CONVS: {"yolov5s-ghost"},
}


def _yaml(name):
    path = resolve_cfg(name)[0]
    return _read_yaml(path, path.name)


@pytest.mark.parametrize("size", ["l", "s"])
def test_placing_each_block_on_its_layout_gives_the_committed_variant_yaml(size):
    for v in VARIANTS:
        variant = _yaml(f"yolov5_{v}.yaml")
        d = compose_variant(_yaml(f"yolov5{size}.yaml"), f"yolov5{size}.yaml", v)
        assert (d["backbone"], d["head"]) == (variant["backbone"], variant["head"]), v


def test_variant_on_p6_base_is_the_p6_model_plus_the_block():
    with captured_log() as lines:
        model = Model("yolov5s6_SE.yaml").eval()
    se = model.model[11]
    assert se.type == "models.attention.channel.SE" and model.model[12].type == "models.common.SPPF"
    added = sum(p.numel() for p in se.parameters())
    assert added > 0 and sum(p.numel() for p in model.parameters()) == HUB["yolov5s6"]["n_params"] + added
    assert model.stride.tolist() == HUB["yolov5s6"]["stride"]
    assert model.model[-1].f == [24, 27, 30, 33]
    with torch.no_grad():
        assert list(model(torch.zeros(1, 3, 256, 256))[0].shape) == HUB["yolov5s6"]["output_shape_256"]
    n_params = HUB["yolov5s6"]["n_params"] + added
    assert [ln for ln in lines if ln.startswith("Model Summary")][0].startswith(
        f"Model Summary: {355 + len(list(se.modules()))} layers, {n_params} parameters"
    )


def test_output_level_blocks_follow_detects_last_input():
    model = Model("yolov3-tiny_SOCA.yaml")  # v3-tiny lists P4 then P5: SOCA goes on P5 (row 15), not row 19
    assert model.model[16].type == "models.attention.soca.SOCA" and model.model[-1].f == [20, 16]
    assert model.model[17].f == 14  # yolov3-tiny's `-2` still reads the P5 1x1 conv
    dyn = Model("yolov5n6_DynamicConv.yaml")  # every 1x1 top-down head Conv, as in yolov5_DynamicConv.yaml
    assert [m.i for m in dyn.model if m.type.endswith("DynamicConv")] == [12, 16, 20]


def test_every_variant_on_every_hub_base_builds_or_says_why():
    failed = {}
    for base in sorted(HUB):
        for v in VARIANTS:
            try:
                load_model_yaml(f"{base}_{v}.yaml")
            except ModelConfigError as e:
                failed[(base, v)] = str(e)
    placements = {v: e.placement for v, e in zip(VARIANTS, variant_entries())}
    for (base, v), msg in failed.items():
        assert msg.startswith(f"{base}_{v}.yaml: cannot put {v} on {base}.yaml: {base}.yaml "), msg
    for v, placement in placements.items():
        place = dataclasses.replace(placement, args=())  # the same landmarks, whatever the block's arguments
        if place in LACKS:
            assert {b for b, w in failed if w == v} == LACKS[place], v
    assert failed[("yolov3", "SE")] == (
        "yolov3_SE.yaml: cannot put SE on yolov3.yaml: yolov3.yaml lacks the backbone's last SPPF, which SE goes before"
    )
    msg = failed[("yolov5s-ghost", "DynamicConv")]
    assert "has no Conv layer with arguments [c2, 1, 1] in its head" in msg


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_builds_and_runs_on_yolov5n6(variant):
    model = Model(f"yolov5n6_{variant}.yaml").eval()
    assert model.stride.tolist() == [8.0, 16.0, 32.0, 64.0]
    with torch.no_grad():
        assert list(model(torch.zeros(1, 3, 256, 256))[0].shape) == [1, 4080, 85]
