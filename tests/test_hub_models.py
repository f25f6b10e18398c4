"""Every YOLOv5 v6.1 models/hub config: per-layer table, summary line, state_dict, strides and output shape."""
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from models.config import MODELS_DIR, resolve_cfg
from models.yolo import Model

from conftest import captured_log

REF = Path(__file__).parent / "data" / "yolov5_v6.1_hub_models.json"  # copy of ../shared/reference's
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
