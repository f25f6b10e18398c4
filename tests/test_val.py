"""val.py against the YOLOv5 v6.1 reference metrics (raccoon, img 320 and 640) and its output files."""

import json
import threading

import cv2
import numpy as np
import pytest
import torch

import val

import conftest
from conftest import RACCOON_VAL as VAL_DIR
from conftest import WEIGHTS, captured_log


def _validate(save_dir, **kwargs):
    """val.run on raccoon val (batch 32) into save_dir/exp; waits for the batch-plot threads."""
    result = val.run(
        data=str(conftest.RACCOON_YAML),
        weights=str(WEIGHTS),
        batch_size=32,
        workers=0,
        project=save_dir,
        name="exp",
        **kwargs,
    )
    for t in threading.enumerate():
        if type(t) is threading.Thread and t.daemon:  # plot threads (not tqdm's monitor, a Thread subclass)
            t.join(timeout=60)
    return result, save_dir / "exp"


@pytest.fixture(scope="module")
def val320(tmp_path_factory):
    """One 320 validation with plots, --save-txt --save-conf and --save-json."""
    return _validate(tmp_path_factory.mktemp("val320"), imgsz=320, save_txt=True, save_conf=True, save_json=True)


@pytest.fixture(scope="module")
def val640(tmp_path_factory):
    """One 640 validation (metrics only)."""
    return _validate(tmp_path_factory.mktemp("val640"), imgsz=640, plots=False)


def _check_against(result, reference_file):
    (p, r, map50, map_, *losses), maps, speed = result
    ref = json.loads(reference_file.read_text())
    assert map50 == pytest.approx(ref["map50"], abs=1e-3)
    assert map_ == pytest.approx(ref["map"], abs=1e-3)
    assert p == pytest.approx(ref["p"], abs=5e-3)
    assert r == pytest.approx(ref["r"], abs=5e-3)
    assert losses == [0.0, 0.0, 0.0] and maps.tolist() == pytest.approx([map_]) and len(speed) == 3


def test_metrics_320_match_v61(val320, reference):
    """P, R, mAP@.5 and mAP@.5:.95 at img 320 equal v6.1's val.py."""
    _check_against(val320[0], reference / "val_320.json")


def test_metrics_640_match_v61(val640, reference):
    """P, R, mAP@.5 and mAP@.5:.95 at img 640 equal v6.1's val.py."""
    _check_against(val640[0], reference / "val_640.json")


def test_plots_written(val320):
    """Curves, confusion matrix and the first batch mosaics are saved as readable images."""
    save_dir = val320[1]
    for name in (
        "confusion_matrix.png",
        "PR_curve.png",
        "F1_curve.png",
        "P_curve.png",
        "R_curve.png",
        "val_batch0_labels.jpg",
        "val_batch0_pred.jpg",
    ):
        im = cv2.imread(str(save_dir / name))
        assert im is not None and im.size > 0, name


def _label_rows(save_dir):
    """{stem: (n, 6) rows `cls x y w h conf`} from --save-txt --save-conf."""
    return {f.stem: np.loadtxt(f, ndmin=2) for f in (save_dir / "labels").glob("*.txt")}


def test_save_txt_conf_rows(val320):
    """One txt per image with predictions, rows `cls x y w h conf` normalised, conf >= conf_thres."""
    rows = _label_rows(val320[1])
    assert set(rows) <= {p.stem for p in VAL_DIR.glob("*.jpg")} and len(rows) >= 38
    for stem, r in rows.items():
        assert r.shape[1] == 6 and (r[:, 0] == 0).all(), stem
        assert (r[:, 1:5] >= 0).all() and (r[:, 1:5] <= 1).all(), stem
        assert (r[:, 5] >= 0.001).all() and (r[:, 5] <= 1).all(), stem


def test_save_json_coco_rows(val320):
    """COCO results: image ids are the file stems, bbox is [x_top_left, y_top_left, w, h] in pixels."""
    save_dir = val320[1]
    results = json.loads((save_dir / "raccoon_yolov5n_best_predictions.json").read_text())
    rows = _label_rows(save_dir)
    assert {d["image_id"] for d in results} == set(rows)
    for stem, r in rows.items():
        h, w = cv2.imread(str(VAL_DIR / f"{stem}.jpg")).shape[:2]
        dets = [d for d in results if d["image_id"] == stem]
        assert len(dets) == len(r) and all(d["category_id"] == 0 for d in dets)
        expected = np.stack([(r[:, 1] - r[:, 3] / 2) * w, (r[:, 2] - r[:, 4] / 2) * h, r[:, 3] * w, r[:, 4] * h], 1)
        for d in dets:  # each result has a txt row with the same score and box
            same_score = np.abs(r[:, 5] - d["score"]) < 1e-4
            assert same_score.any(), stem
            assert np.abs(expected[same_score] - d["bbox"]).max(1).min() < 0.05, (stem, d)


def test_speed_task_runs(tmp_path):
    """--task speed: a square, unpadded pass that reports three per-image timings."""
    (p, r, map50, map_, *_), _, speed = _validate(tmp_path, imgsz=64, task="speed", plots=False)[0]
    assert len(speed) == 3 and all(t > 0 for t in speed)
    assert 0 <= map50 <= 1 and 0 <= map_ <= map50


def test_val_loader_workers_leave_inference_its_cores(monkeypatch):
    monkeypatch.setattr(val.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(val.torch, "get_num_threads", lambda: 12)
    assert val.spare_core_workers(8, torch.device("cpu")) == 4
    monkeypatch.setattr(val.torch, "get_num_threads", lambda: 16)
    assert val.spare_core_workers(8, torch.device("cpu")) == 0  # all cores infer: load in-process
    assert val.spare_core_workers(8, torch.device("meta")) == 8  # not a CPU: workers as asked


def test_half_on_cpu_is_bf16_autocast_close_to_float32(val320, tmp_path):
    (p, r, map50, map_, *_), _, _ = val320[0]
    with captured_log() as log:
        (hp, hr, hmap50, hmap, *_), _, _ = _validate(tmp_path, imgsz=320, half=True, plots=False)[0]
    assert any("--half on CPU: bfloat16 autocast" in line for line in log)
    assert (hp, hr, hmap50, hmap) != (p, r, map50, map_)  # bf16 really ran
    assert abs(hmap50 - map50) < 0.01 and abs(hmap - map_) < 0.01  # measured: -0.0016, +0.0058


def test_set_without_labels_warns_in_one_line_as_v61(tmp_path):
    """val.py and training's validation (val.run with a model and loader) on images that have no label files."""
    from models.loading import attempt_load
    from utils.datasets import create_dataloader

    images = tmp_path / "nolabels" / "images" / "val"
    images.mkdir(parents=True)
    for p in sorted(VAL_DIR.glob("*.jpg"))[:2]:
        images.joinpath(p.name).write_bytes(p.read_bytes())
    data = {"path": str(tmp_path / "nolabels"), "train": "images/val", "val": "images/val", "nc": 1, "names": ["r"]}
    (tmp_path / "d.yaml").write_text(json.dumps(data))
    warning = "WARNING: no labels found in val set, can not compute metrics without labels"
    with captured_log() as lines:
        (p, r, map50, *_), _, _ = val.run(
            data=tmp_path / "d.yaml", weights=WEIGHTS, imgsz=64, workers=0, project=tmp_path
        )
    assert lines.count(warning) == 1 and (p, r, map50) == (0, 0, 0)
    loader = create_dataloader(str(images), 64, 2, 32, pad=0.5, rect=True, workers=0)[0]
    with captured_log() as lines:
        val.run(data, model=attempt_load(WEIGHTS), dataloader=loader, save_dir=tmp_path, plots=False)
    assert lines.count(warning) == 1
