"""v6.1's tools: --visualize, --task study, detect --data, AutoBatch, yolo.py --profile, thop GFLOPs, colours."""

import json
import logging
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

import detect
import train
import val
from models import backends
from models.loading import attempt_load
from models.yolo import Model
from models.yolo import main as yolo_main
from utils import autobatch, plots
from utils.general import LOGGER
from utils.plots import colors, feature_visualization, visualize_features
from utils.torch_utils import legacy_gflops, profile_layers

from conftest import ROOT, captured_log


def _quiet_model(cfg="yolov5n.yaml"):
    LOGGER.setLevel(logging.WARNING)
    try:
        with mock.patch.object(Model, "info"):
            return Model(cfg).eval()
    finally:
        LOGGER.setLevel(logging.INFO)


def test_colours_are_v61_palette_in_order():
    assert colors(0) == (0xFF, 0x38, 0x38) and colors(1) == (0xFF, 0x9D, 0x97) and colors(19) == (0xFF, 0x37, 0xC7)
    assert colors(20) == colors(0) and colors(2, bgr=True) == (0x1F, 0x70, 0xFF)


def test_feature_visualization_grid(tmp_path):
    f = feature_visualization(torch.rand(1, 40, 8, 8), "models.common.C3", 4, save_dir=tmp_path)
    assert f == tmp_path / "stage4_C3_features.png" and f.stat().st_size > 1000
    assert feature_visualization(torch.rand(1, 8, 1, 1), "models.common.Conv", 5, save_dir=tmp_path) is None
    assert feature_visualization([torch.rand(1, 8, 4, 4)], "models.yolo.Detect", 24, save_dir=tmp_path) is None


def test_visualize_features_saves_each_layer_once(tmp_path):
    """Every yaml layer's map is handed over once, even when TTA runs the model three times; hooks are removed."""
    model = _quiet_model()
    calls = []
    with mock.patch.object(plots, "feature_visualization", lambda x, t, i, n, save_dir: calls.append((i, t))):
        with torch.no_grad(), visualize_features(model, tmp_path):
            model(torch.rand(1, 3, 64, 64), augment=True)
        model(torch.rand(1, 3, 64, 64))
    assert [i for i, _ in calls] == list(range(len(model.model)))
    assert calls[9][1] == "models.common.SPPF"


@pytest.mark.slow
def test_detect_visualize_writes_stage_pngs(tmp_path, ref_weights, shared):
    src = tmp_path / "src"
    src.mkdir()
    img = sorted((shared / "data" / "raccoon" / "images" / "val").glob("*.jpg"))[0]
    (src / img.name).write_bytes(img.read_bytes())
    save_dir = detect.run(weights=ref_weights, source=src, imgsz=(64, 64), project=tmp_path, name="exp", visualize=True)
    pngs = sorted(p.name for p in (save_dir / img.stem).glob("*.png"))
    assert len(pngs) == 24 and "stage0_Conv_features.png" in pngs and "stage9_SPPF_features.png" in pngs


def test_study_writes_rows_and_plot(tmp_path, monkeypatch, ref_weights, raccoon_yaml):
    """--task study over a short size range: one row per size, the 320 row equals val.py at 320."""
    monkeypatch.chdir(tmp_path)
    opt = val.parse_opt(
        [
            "--weights",
            str(ref_weights),
            "--data",
            str(raccoon_yaml),
            "--task",
            "study",
            "--workers",
            "0",
            "--project",
            str(tmp_path / "runs"),
            "--exist-ok",
        ]
    )
    files = val.study(opt, x=[256, 320])
    rows = np.loadtxt(files[0])
    assert files[0].name == "study_raccoon_raccoon_yolov5n_best.txt" and rows.shape == (2, 10)
    ref = json.loads((ROOT / "tests" / "data" / "reference" / "val_320.json").read_text())
    assert rows[1, 2] == pytest.approx(ref["map50"], abs=1e-3) and rows[1, 3] == pytest.approx(ref["map"], abs=1e-3)
    assert (tmp_path / "study.png").stat().st_size > 10000


def test_names_from_data(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump({"names": {0: "cat", 1: "dog"}}))
    assert backends.clean_names(None, 2, f) == ["cat", "dog"]
    f.write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    assert backends.clean_names(None, 3, f) == ["a", "b", "c"]
    assert backends.clean_names(["own"], 1, f) == ["own"], "a model's own names win"
    with captured_log() as log:
        assert backends.clean_names(None, 2, tmp_path / "missing.yaml") == ["class0", "class1"]
    assert any("missing.yaml not found" in line for line in log)


def test_detect_data_names_a_model_without_names(tmp_path, monkeypatch):
    model = _quiet_model()
    del model.names
    monkeypatch.setattr(backends, "attempt_load", lambda *a, **k: model)
    monkeypatch.setattr(backends, "attempt_download", lambda w: w)
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"names": [f"n{i}" for i in range(80)]}))
    _, stride, names = detect.load_model("model.pt", torch.device("cpu"), False, data=data)
    assert stride == 32 and names[:2] == ["n0", "n1"] and len(names) == 80


def test_autobatch_cpu_uses_16():
    with captured_log() as log:
        assert autobatch.check_train_batch_size(_quiet_model(), 320) == 16
    assert any("CUDA not detected, using default CPU batch-size 16" in line for line in log)


def test_autobatch_fit_fills_90_percent():
    mib = 2**20
    batches, mem = [1, 2, 4, 8, 16], [500 * mib + b * 100 * mib for b in [1, 2, 4, 8, 16]]
    assert autobatch.fit_batch_size(batches, mem, free=10_050 * mib) == 85  # (0.9 * 10050 - 500) / 100 = 85.45
    assert autobatch.fit_batch_size([1], [mib], free=10_000 * mib) == 16
    assert autobatch.fit_batch_size([1, 2], [mib, mib], free=10_000 * mib) == 16


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autobatch_cuda_fits_free_memory():
    model = _quiet_model().cuda()
    b = autobatch.check_train_batch_size(model, 320)
    free = autobatch.free_memory(torch.device("cuda:0"))
    batches, mem = autobatch.measure_batches(model.train(), 320, torch.device("cuda:0"))
    assert batches == [1, 2, 4, 8, 16] and mem[-1] > mem[0] > 0
    assert b > 16 and np.polyval(np.polyfit(batches, mem, 1), b) <= 0.9 * free * 1.05


def test_train_batch_size_minus_one_on_cpu(tiny_data, tmp_path):
    with captured_log() as log:
        train.main(
            train.parse_opt(
                [
                    "--data",
                    str(tiny_data),
                    "--cfg",
                    "yolov5n.yaml",
                    "--weights",
                    "",
                    "--img",
                    "64",
                    "--batch-size",
                    "-1",
                    "--epochs",
                    "1",
                    "--workers",
                    "0",
                    "--noautoanchor",
                    "--noval",
                    "--nosave",
                    "--project",
                    str(tmp_path),
                    "--name",
                    "exp",
                ]
            )
        )
    assert any("CUDA not detected, using default CPU batch-size 16" in line for line in log)
    opt_yaml = yaml.safe_load((tmp_path / "exp" / "opt.yaml").read_text())
    assert opt_yaml["batch_size"] == -1


def test_profile_layers_table():
    model = _quiet_model()
    with captured_log() as log:
        rows = profile_layers(model, torch.rand(1, 3, 64, 64), n=1)
    assert len(rows) == len(model.model) and rows[9][3] == "models.common.SPPF"
    assert rows[9][2] == sum(p.numel() for p in model.model[9].parameters())
    assert sum(r[1] for r in rows) == pytest.approx(legacy_gflops(model, 64), rel=1e-3)
    assert log[0].split() == ["time", "(ms)", "GFLOPs", "params", "module"] and log[-1].split()[-1] == "Total"


def test_yolo_main_profile():
    with captured_log() as log:
        assert yolo_main(["--cfg", "yolov5n.yaml", "--profile"]) == 0
    assert any(line.endswith("Total") for line in log)


def test_thop_gflops_fused_reference_summary(ref_weights):
    """The fused raccoon checkpoint prints v6.1's line (4.1 GFLOPs, where a hand-written count gave 4.2)."""
    model = attempt_load(ref_weights, fuse=False)
    with captured_log() as log:
        model.fuse()
    assert "Model Summary: 213 layers, 1760518 parameters, 0 gradients, 4.1 GFLOPs" in log
