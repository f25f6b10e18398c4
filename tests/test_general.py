"""Tests for utils.general and utils.boxes: paths, file lookup, sizes, schedules, box conversions, NMS."""

import math

import numpy as np
import pytest
import torch

import utils.general as general
from utils.general import (
    check_file,
    check_img_size,
    check_suffix,
    clip_coords,
    increment_path,
    labels_to_class_weights,
    labels_to_image_weights,
    make_divisible,
    non_max_suppression,
    one_cycle,
    scale_coords,
    xyn2xy,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)


def _pred(rows, nc):
    """(1, n, 5+nc) prediction from rows (x, y, w, h, obj, *cls_scores)."""
    return torch.tensor(rows, dtype=torch.float32).view(1, -1, 5 + nc)


def test_increment_path_numbers_from_two(tmp_path):
    base = tmp_path / "exp"
    assert increment_path(base) == base
    base.mkdir()
    assert increment_path(base, mkdir=True) == tmp_path / "exp2"
    (tmp_path / "exp7").mkdir()
    assert increment_path(base) == tmp_path / "exp8"
    assert increment_path(base, exist_ok=True) == base


def test_check_file_searches_root(tmp_path, monkeypatch):
    monkeypatch.setattr(general, "ROOT", tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.yaml").write_text("nc: 1\n")
    assert check_file("m.yaml") == str(tmp_path / "models" / "m.yaml")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.yaml").write_text("nc: 2\n")
    with pytest.raises(FileNotFoundError, match="m.yaml"):
        check_file("m.yaml")
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        check_file("absent.yaml")


def test_check_suffix_rejects_wrong_suffix():
    check_suffix("w.pt", ".pt")
    with pytest.raises(ValueError, match="w.onnx"):
        check_suffix(["a.pt", "w.onnx"], (".pt",))


def test_make_divisible_and_check_img_size():
    assert make_divisible(100, 32) == 128
    assert make_divisible(64, torch.tensor([8.0, 16.0, 32.0])) == 64
    assert check_img_size(640) == 640
    assert check_img_size(650, s=32) == 672
    assert check_img_size([300, 320], s=32, floor=64) == [320, 320]


def test_one_cycle_ramps_between_ends():
    f = one_cycle(1.0, 0.01, 100)
    assert f(0) == pytest.approx(1.0) and f(100) == pytest.approx(0.01)
    assert f(50) == pytest.approx((1.0 + 0.01) / 2)


def test_class_and_image_weights():
    labels = [np.array([[0, 0.5, 0.5, 0.1, 0.1], [0, 0.2, 0.2, 0.1, 0.1]]), np.array([[1, 0.5, 0.5, 0.1, 0.1]])]
    w = labels_to_class_weights(labels, nc=3)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[1] == pytest.approx(2 * w[0].item()) and w[2] == pytest.approx(w[1].item())  # unseen class counts as 1
    iw = labels_to_image_weights(labels, nc=3, class_weights=np.array([1.0, 10.0, 0.0]))
    assert iw.tolist() == [2.0, 10.0]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_box_conversions_round_trip(lib):
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 640.0, 320.0]])
    x = torch.tensor(xyxy) if lib == "torch" else xyxy
    xywh = xyxy2xywh(x)
    assert np.allclose(np.asarray(xywh[0]), [30, 50, 40, 60])
    assert np.allclose(np.asarray(xywh2xyxy(xywh)), xyxy)
    xywhn = xyxy2xywhn(x, w=640, h=320)
    assert np.allclose(np.asarray(xywhn[1]), [0.5, 0.5, 1.0, 1.0])
    assert np.allclose(np.asarray(xywhn2xyxy(xywhn, w=640, h=320, padw=5, padh=7)), xyxy + [5, 7, 5, 7])
    assert np.allclose(np.asarray(xyn2xy(x[:, :2] / 640, w=640, h=640)), xyxy[:, :2])


def test_clip_coords_numpy_and_torch():
    boxes = np.array([[-5.0, -5.0, 700.0, 500.0]])
    assert clip_coords(boxes.copy(), (480, 640)).tolist() == [[0, 0, 640, 480]]
    assert clip_coords(torch.tensor(boxes), (480, 640)).tolist() == [[0, 0, 640, 480]]


@pytest.mark.parametrize("img0_shape", [(480, 640), (500, 300)])
def test_scale_coords_undoes_letterbox(img0_shape):
    img1_shape = (320, 320)
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    padw, padh = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    original = torch.tensor([[10.0, 20.0, 200.0, 240.0], [0.0, 0.0, img0_shape[1], img0_shape[0]]])
    boxed = original * gain + torch.tensor([padw, padh, padw, padh])
    assert torch.allclose(scale_coords(img1_shape, boxed.clone(), img0_shape), original, atol=1e-4)
    explicit = scale_coords(img1_shape, boxed.clone(), img0_shape, ratio_pad=((gain, gain), (padw, padh)))
    assert torch.allclose(explicit, original, atol=1e-4)


def test_nms_class_offset_versus_agnostic():
    rows = [[50, 50, 20, 20, 0.9, 0.9, 0.1], [51, 51, 20, 20, 0.8, 0.1, 0.9]]  # overlapping, different best classes
    assert len(non_max_suppression(_pred(rows, 2))[0]) == 2
    out = non_max_suppression(_pred(rows, 2), agnostic=True)[0]
    assert len(out) == 1 and out[0, 5] == 0 and out[0, 4] == pytest.approx(0.81)
    assert torch.allclose(out[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))


def test_nms_conf_max_det_and_classes():
    rows = [[20 * k + 10, 10, 8, 8, 0.31 + 0.05 * k, 1.0, 0.0] for k in range(10)]  # disjoint boxes
    rows[9][5:] = [0.0, 1.0]
    out = non_max_suppression(_pred(rows, 2), conf_thres=0.4, max_det=3)[0]
    assert out[:, 4].tolist() == pytest.approx([0.76, 0.71, 0.66])
    assert out[:, 5].tolist() == [1, 0, 0]
    assert len(non_max_suppression(_pred(rows, 2), conf_thres=0.4)[0]) == 8  # obj 0.31 and 0.36 dropped
    only1 = non_max_suppression(_pred(rows, 2), conf_thres=0.4, classes=[1])[0]
    assert len(only1) == 1 and only1[0, 5] == 1


def test_nms_multi_label_and_validation():
    rows = [[50, 50, 20, 20, 0.9, 0.8, 0.6, 0.1]]
    pred = _pred(rows, 3)
    assert len(non_max_suppression(pred)[0]) == 1
    assert torch.equal(pred, _pred(rows, 3))  # input left untouched
    out = non_max_suppression(_pred(rows, 3), multi_label=True)[0]
    assert sorted(out[:, 5].tolist()) == [0, 1]
    assert len(non_max_suppression(_pred(rows, 3), conf_thres=0.95)[0]) == 0
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(_pred(rows, 3), conf_thres=1.5)
    with pytest.raises(ValueError, match="iou_thres"):
        non_max_suppression(_pred(rows, 3), iou_thres=-0.1)


def test_nms_apriori_labels_are_kept():
    rows = [[50, 50, 20, 20, 0.01, 1.0]]
    labels = [torch.tensor([[0.0, 200.0, 200.0, 40.0, 40.0]])]
    out = non_max_suppression(_pred(rows, 1), labels=labels)[0]
    assert len(out) == 1 and out[0, 4] == 1.0 and math.isclose(out[0, 0].item(), 180.0)
