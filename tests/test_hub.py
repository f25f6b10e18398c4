"""hubconf.py through torch.hub.load (source='local'): AutoShape inputs and the Detections results object."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import detect
import hubconf
from models.autoshape import AutoShape, Detections
from models.loading import load_checkpoint
from models.variants import variant_entries

from conftest import RACCOON_VAL, WEIGHTS, captured_log

ROOT = Path(__file__).resolve().parents[1]
IMAGE = RACCOON_VAL / "raccoon-102.jpg"  # 259x194, two raccoons


@pytest.fixture(scope="module")
def model():
    return torch.hub.load(str(ROOT), "custom", path=str(WEIGHTS), source="local", verbose=False)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Loopback HTTP server with the raccoon image and the raccoon checkpoint served as yolov5n.pt."""
    srv = tmp_path / "srv"
    srv.mkdir()
    shutil.copy(IMAGE, srv / "r.jpg")
    shutil.copy(WEIGHTS, srv / "yolov5n.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(srv))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("YOLOV5_RELEASE_URL", url)
    yield url
    httpd.shutdown()
    httpd.server_close()


def test_v61_defaults(model):
    assert isinstance(model, AutoShape)
    assert (model.conf, model.iou, model.classes, model.agnostic, model.multi_label, model.max_det) == (
        0.25,
        0.45,
        None,
        False,
        False,
        1000,
    )


def test_every_input_kind_gives_the_same_boxes(model, server):
    rgb = np.asarray(Image.open(IMAGE))
    inputs = [str(IMAGE), IMAGE, Image.open(IMAGE), rgb, cv2.imread(str(IMAGE))[..., ::-1], f"{server}/r.jpg"]
    results = model(inputs, size=320)
    assert isinstance(results, Detections) and len(results) == 6
    assert results.files == [
        "raccoon-102.jpg",
        "raccoon-102.jpg",
        "raccoon-102.jpg",
        "image3.jpg",
        "image4.jpg",
        "r.jpg",
    ]
    for det in results.xyxy:
        assert det.shape == (2, 6) and torch.allclose(det, results.xyxy[0], atol=1e-3)


def test_boxes_match_detect_py(model, tmp_path):
    found = model(str(IMAGE), size=320).xyxy[0]
    save_dir = detect.run(
        weights=WEIGHTS, source=IMAGE, imgsz=320, project=tmp_path, save_txt=True, save_conf=True, nosave=True
    )
    rows = np.loadtxt(save_dir / "labels" / "raccoon-102.txt", ndmin=2)  # cls x y w h conf, lowest conf first
    xyxy = np.concatenate((rows[:, 1:3] - rows[:, 3:5] / 2, rows[:, 1:3] + rows[:, 3:5] / 2), 1) * (259, 194, 259, 194)
    ours = found.numpy()[::-1]
    assert np.abs(ours[:, :4] - xyxy).max() <= 1.0 and np.abs(ours[:, 4] - rows[:, 5]).max() < 1e-3


def test_box_layouts_are_consistent(model):
    r = model(str(IMAGE), size=320)
    xyxy, xywh, xyxyn, xywhn = r.xyxy[0], r.xywh[0], r.xyxyn[0], r.xywhn[0]
    gn = torch.tensor([259, 194, 259, 194])
    assert torch.allclose(xyxyn[:, :4] * gn, xyxy[:, :4]) and torch.allclose(xywhn[:, :4] * gn, xywh[:, :4])
    assert torch.allclose(xywh[:, :2], (xyxy[:, :2] + xyxy[:, 2:4]) / 2)
    assert torch.equal(xyxyn[:, 4:], xyxy[:, 4:])


def test_print_pandas_tolist(model):
    r = model([str(IMAGE), np.zeros((64, 96, 3), np.uint8)], size=320)
    with captured_log() as lines:
        r.print()
    assert lines[0] == "image 1/2: 194x259 2 raccoons" and lines[1] == "image 2/2: 64x96 (no detections)"
    assert lines[2].startswith("Speed: ") and lines[2].endswith("per image at shape (2, 3, 256, 320)")
    df = r.pandas().xyxy[0]
    assert isinstance(df, pd.DataFrame) and list(df.columns) == [
        "xmin",
        "ymin",
        "xmax",
        "ymax",
        "confidence",
        "class",
        "name",
    ]
    assert list(df.name) == ["raccoon", "raccoon"] and list(r.pandas().xywh[0].columns)[:4] == [
        "xcenter",
        "ycenter",
        "width",
        "height",
    ]
    parts = r.tolist()
    assert [len(p) for p in parts] == [1, 1] and torch.equal(parts[0].xyxy[0], r.xyxy[0])


def test_save_crop_render(model, tmp_path):
    r = model(str(IMAGE), size=320)
    original = r.imgs[0].copy()
    save_dir = r.save(save_dir=tmp_path / "exp")
    assert cv2.imread(str(save_dir / "raccoon-102.jpg")).shape == (194, 259, 3)
    crops = r.crop(save_dir=tmp_path / "crops")
    assert len(crops) == 2 and len(list((tmp_path / "crops" / "crops" / "raccoon").glob("*.jpg"))) == 2
    assert crops[0]["label"].startswith("raccoon ") and crops[0]["im"].ndim == 3
    rendered = r.render()[0]
    assert rendered.shape == original.shape and (rendered != original).any()


def test_tensor_input_skips_nms_like_v61(model):
    y, _ = model(torch.zeros(1, 3, 128, 160))
    assert y.shape == (1, 3 * (20 * 16 + 10 * 8 + 5 * 4), 6)


def test_entry_points_cover_sizes_and_variants():
    names = [f"yolov5{s}{p}" for p in ("", "6") for s in "nsmlx"]
    variants = [e.name for e in variant_entries()]
    assert {f"yolov5_{v}.yaml" for v in variants} == {p.name for p in (ROOT / "models").glob("yolov5_*.yaml")}
    for name in names + [f"yolov5{s}_{v}" for v in variants for s in "nsmlx"]:
        assert callable(getattr(hubconf, name)), name


def test_variant_from_scratch_with_channels_and_classes():
    m = torch.hub.load(
        str(ROOT),
        "yolov5n_SOCA",
        pretrained=False,
        channels=1,
        classes=3,
        autoshape=False,
        source="local",
        verbose=False,
    )
    y, _ = m.eval()(torch.zeros(1, 1, 64, 64))
    assert y.shape[-1] == 8


def test_pretrained_downloads_release_weights_and_transfers_into_a_variant(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = torch.hub.load(str(ROOT), "yolov5n", source="local", verbose=False)
    assert (tmp_path / "yolov5n.pt").stat().st_size == WEIGHTS.stat().st_size and m.names == ["raccoon"]
    se = torch.hub.load(str(ROOT), "yolov5n_SE", classes=1, source="local", verbose=False)
    assert se.names == ["raccoon"]
    raw = load_checkpoint(WEIGHTS)["model"].float().model
    assert torch.equal(se.model.model[0].conv.weight, raw[0].conv.weight)  # before the inserted SE block
    assert torch.equal(se.model.model[-1].m[0].weight, raw[-1].m[0].weight)  # Detect, shifted by one layer
    assert len(se(str(IMAGE), size=320)) == 1


def test_offline_pretrained_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLOV5_RELEASE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr("utils.downloads.RETRIES", 1)
    with pytest.raises(ConnectionError, match=r"http://127.0.0.1:9/yolov5s.pt by hand"):
        torch.hub.load(str(ROOT), "yolov5s", source="local", verbose=False)


def test_custom_runs_exported_files(model, tmp_path):
    from export import run as export

    shutil.copy(WEIGHTS, tmp_path / "s.pt")
    shutil.copy(WEIGHTS, tmp_path / "d.pt")
    (static,) = export(weights=tmp_path / "s.pt", include=["onnx"], imgsz=320)
    (dynamic,) = export(weights=tmp_path / "d.pt", include=["openvino"], imgsz=320, dynamic=True)
    ref = model(str(IMAGE), size=320).xyxy[0]
    for f in static, dynamic:
        m = torch.hub.load(str(ROOT), "custom", path=str(f), source="local", verbose=False)
        r = m([str(IMAGE), str(IMAGE)], size=320)  # a static batch-1 export gets the images one at a time
        assert r.names == ["raccoon"] and [len(d) for d in r.xyxy] == [2, 2], f
    assert (r.xyxy[0] - ref).abs().max() < 1.0  # the dynamic export sees the .pt's input: same boxes
