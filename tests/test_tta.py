"""Test-time augmentation (models/tta.py): v6.1's scales, flips and level clipping; val/detect --augment."""

import json
import logging
import shutil
from unittest import mock

import pytest
import torch

import detect
import val
from models.tta import clip_augmented, descale_pred, forward_augment, scale_img
from models.yolo import Model
from utils.general import LOGGER

import conftest
from conftest import ROOT, SHARED

VARIANTS = sorted(p.stem.split("_", 1)[1] for p in (ROOT / "models").glob("yolov5_*.yaml"))


def _quiet_model(cfg):
    LOGGER.setLevel(logging.WARNING)
    try:
        with mock.patch.object(Model, "info"):
            return Model(cfg).eval()
    finally:
        LOGGER.setLevel(logging.INFO)


def _rows(h, w, strides=(8, 16, 32), na=3):
    return [na * (h // s) * (w // s) for s in strides]


def test_scale_img_resizes_and_pads_with_grey():
    x = torch.rand(2, 3, 64, 96)
    y = scale_img(x, 0.67, gs=32)
    assert y.shape == (2, 3, 64, 96)  # int(64*.67)=42 -> padded to 64, int(96*.67)=64 -> 96
    assert torch.all(y[:, :, 42:, :] == 0.447) and torch.all(y[:, :, :, 64:] == 0.447)
    ref = torch.nn.functional.interpolate(x, size=(42, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[:, :, :42, :64], ref)
    assert scale_img(x, 1.0) is x


def test_descale_pred_unscales_and_unflips():
    p = torch.tensor([[[10.0, 20.0, 4.0, 8.0, 0.9, 0.5]]])
    torch.testing.assert_close(descale_pred(p, 3, 0.5, (64, 96)), torch.tensor([[[76.0, 40, 8, 16, 0.9, 0.5]]]))
    torch.testing.assert_close(descale_pred(p, 2, 1.0, (64, 96)), torch.tensor([[[10.0, 44, 4, 8, 0.9, 0.5]]]))


@pytest.mark.parametrize("strides", [(8, 16, 32), (8, 16, 32, 64)])
def test_clip_drops_coarsest_level_of_first_and_finest_of_last(strides):
    h, w = 128, 192
    rows = _rows(h, w, strides)
    y = [torch.arange(sum(rows)).view(1, -1, 1) for _ in range(3)]
    first, middle, last = clip_augmented(y, len(strides))
    assert first.shape[1] == sum(rows[:-1]) and first[0, -1, 0] == sum(rows[:-1]) - 1
    assert last.shape[1] == sum(rows[1:]) and last[0, 0, 0] == rows[0]
    assert middle.shape[1] == sum(rows)


def test_first_version_is_the_plain_forward():
    """The scale-1 part of the TTA output equals the plain forward without its P5 rows."""
    model = _quiet_model("yolov5n.yaml")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain = model(x)[0]
        aug, train_out = model(x, augment=True)
    n = sum(_rows(64, 96)[:2])
    assert train_out is None
    torch.testing.assert_close(aug[:, :n], plain[:, :n])


@pytest.mark.parametrize("variant", VARIANTS)
def test_augment_works_for_every_variant(variant):
    model = _quiet_model(f"yolov5n_{variant}.yaml")
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        y, _ = forward_augment(model, x)
    rows = _rows(64, 96)  # the 0.83 and 0.67 versions are padded back to 64x96 (multiples of 32)
    expected = sum(rows[:2]) + sum(rows) + sum(rows[1:])
    assert y.shape == (2, expected, 5 + model.model[-1].nc) and torch.isfinite(y).all()


def _val_augment(tmp_path, imgsz):
    weights, data = SHARED / "reference" / "raccoon_yolov5n_best.pt", conftest.RACCOON_YAML
    if not weights.exists() or not data.exists():
        pytest.skip("needs ../shared (reference checkpoint and raccoon data)")
    (p, r, map50, map_, *_), _, _ = val.run(
        data=str(data),
        weights=str(weights),
        imgsz=imgsz,
        batch_size=32,
        workers=0,
        project=tmp_path,
        name="exp",
        plots=False,
        augment=True,
    )
    ref = json.loads((ROOT / "tests" / "data" / "reference" / f"val_{imgsz}_augment.json").read_text())
    assert map50 == pytest.approx(ref["map50"], abs=1e-3)
    assert map_ == pytest.approx(ref["map"], abs=1e-3)
    assert p == pytest.approx(ref["p"], abs=5e-3) and r == pytest.approx(ref["r"], abs=5e-3)


def test_val_augment_320_matches_v61(tmp_path):
    _val_augment(tmp_path, 320)


def test_val_augment_640_matches_v61(tmp_path):
    _val_augment(tmp_path, 640)


def test_detect_augment_writes_boxes(tmp_path, ref_weights, shared):
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted((shared / "data" / "raccoon" / "images" / "val").glob("*.jpg"))[:2]:
        shutil.copy(f, src)
    save_dir = detect.run(
        weights=ref_weights,
        source=src,
        imgsz=(320, 320),
        save_txt=True,
        save_conf=True,
        project=tmp_path,
        name="exp",
        augment=True,
    )
    rows = [
        [float(v) for v in line.split()]
        for f in (save_dir / "labels").glob("*.txt")
        for line in f.read_text().splitlines()
    ]
    assert rows and all(r[0] == 0 and all(0 <= v <= 1 for v in r[1:5]) and r[5] >= 0.25 for r in rows)
