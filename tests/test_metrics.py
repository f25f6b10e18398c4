"""Tests for utils.metrics: IoU variants, val matching, AP, ap_per_class, confusion matrix, fitness."""

import numpy as np
import pytest
import torch

from utils.metrics import ConfusionMatrix, ap_per_class, bbox_iou, box_iou, compute_ap, fitness, match_predictions

IOUV = torch.linspace(0.5, 0.95, 10)


def test_fitness_weights():
    assert fitness(np.array([[0.3, 0.4, 0.5, 0.2]])).tolist() == pytest.approx([0.05 + 0.18])


def test_box_iou_pairwise():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_ciou_equals_iou_for_concentric_same_aspect_boxes():
    b1 = torch.tensor([[50.0, 40.0, 20.0, 10.0], [5.0, 5.0, 4.0, 8.0]])
    b2 = torch.tensor([[50.0, 40.0, 10.0, 5.0], [5.0, 5.0, 2.0, 4.0]])
    iou = bbox_iou(b1, b2)
    assert iou.tolist() == pytest.approx([0.25, 0.25], abs=1e-6)
    assert torch.allclose(bbox_iou(b1, b2, CIoU=True), iou, atol=1e-6)
    assert torch.allclose(bbox_iou(b1, b2, DIoU=True), iou, atol=1e-6)


def test_giou_diou_ciou_penalise_distance_and_shape():
    b1 = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b2 = torch.tensor([[20.0, 0.0, 30.0, 10.0]])
    assert bbox_iou(b1, b2, xywh=False).item() == 0
    assert bbox_iou(b1, b2, xywh=False, GIoU=True).item() == pytest.approx(-1 / 3, abs=1e-6)
    assert bbox_iou(b1, b2, xywh=False, DIoU=True).item() == pytest.approx(-400 / 1000, abs=1e-6)
    wide = torch.tensor([[0.0, 0.0, 10.0, 5.0]])
    assert bbox_iou(b1, wide, xywh=False, CIoU=True) < bbox_iou(b1, wide, xywh=False, DIoU=True)


def test_ciou_alpha_carries_no_gradient_but_iou_does():
    b1 = torch.tensor([[5.0, 5.0, 4.0, 6.0]], requires_grad=True)
    b2 = torch.tensor([[6.0, 5.0, 5.0, 5.0]])
    bbox_iou(b1, b2, CIoU=True).sum().backward()
    assert torch.isfinite(b1.grad).all() and b1.grad.abs().sum() > 0


def test_compute_ap_known_curves():
    # a perfect detector scores 0.995, not 1: the appended (R=1, P=0) point shares x=1 with the last real point
    assert compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]))[0] == pytest.approx(0.995)
    assert compute_ap(np.array([0.5]), np.array([1.0]))[0] == pytest.approx(0.75)  # linear fall to P=0 at R=1
    ap, mpre, mrec = compute_ap(np.array([0.2, 0.4]), np.array([0.5, 1.0]))
    assert mpre.tolist() == [1.0, 1.0, 1.0, 0.0] and mrec.tolist() == [0.0, 0.2, 0.4, 1.0]


def test_match_predictions_one_to_one_and_thresholds():
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 20.0, 20.0, 30.0, 30.0]])
    dets = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0, 0.9, 0],  # exact match of label 0
            [0.0, 0.0, 10.0, 10.0, 0.8, 0],  # duplicate of label 0
            [20.0, 20.0, 30.0, 28.0, 0.7, 1],  # IoU 0.8 with label 1
            [20.0, 20.0, 30.0, 30.0, 0.6, 0],
        ]
    )  # wrong class
    correct = match_predictions(dets, labels, IOUV)
    assert correct.shape == (4, 10) and correct.dtype == torch.bool
    assert correct[:, 0].sum() == 2 and not correct[3].any()
    assert correct[2].tolist() == [True] * 7 + [False] * 3


def test_match_predictions_keeps_first_detection_per_label_after_dedup():
    # v6.1: after keeping each detection's best pair, each label keeps its lowest-index detection
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]])
    dets = torch.tensor(
        [
            [0.0, 0.0, 10.0, 6.0, 0.9, 0],  # IoU 0.6
            [0.0, 0.0, 10.0, 10.0, 0.8, 0],
        ]
    )  # IoU 1.0
    correct = match_predictions(dets, labels, IOUV)
    assert correct[0].tolist() == [True] * 3 + [False] * 7 and not correct[1].any()


def test_ap_per_class_perfect_detector():
    tp = np.ones((3, 10), dtype=bool)
    p, r, ap, f1, classes = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), np.array([0, 0, 1]))
    assert classes.tolist() == [0, 1]
    assert np.allclose(ap, 0.995) and np.allclose(p, 1.0) and np.allclose(r, 1.0, atol=1e-6)
    assert np.allclose(f1, 1.0, atol=1e-6)


def test_ap_per_class_half_recall_and_missing_class():
    tp = np.array([[1] * 10, [0] * 10])
    p, r, ap, f1, classes = ap_per_class(tp, np.array([0.9, 0.5]), np.array([0, 0]), np.array([0, 0, 2]))
    assert classes.tolist() == [0, 2]
    assert ap[0, 0] == pytest.approx(0.6225) and ap[1].sum() == 0  # 0.5 + sampled 0.5->0 ramp; class 2 unpredicted
    assert r[0] == pytest.approx(0.5) and p[0] == pytest.approx(1.0, abs=1e-3)


def test_confusion_matrix_counts():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 20.0, 20.0, 30.0, 30.0], [0, 50.0, 50.0, 60.0, 60.0]])
    dets = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0, 0.9, 0],  # correct class 0
            [20.0, 20.0, 30.0, 30.0, 0.8, 0],  # label class 1 predicted as 0
            [80.0, 80.0, 90.0, 90.0, 0.7, 1],  # matches nothing: background FP
            [50.0, 50.0, 60.0, 60.0, 0.1, 0],
        ]
    )  # below conf: dropped, label 2 missed
    cm.process_batch(dets, labels)
    expected = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert (cm.matrix == expected).all()
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0] and fp.tolist() == [1, 1]


def test_confusion_matrix_without_matches_counts_only_missed_labels():
    cm = ConfusionMatrix(nc=1)
    cm.process_batch(torch.tensor([[80.0, 80.0, 90.0, 90.0, 0.9, 0]]), torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]]))
    assert cm.matrix.tolist() == [[0, 0], [1, 0]]  # v6.1 skips unmatched detections when nothing matched


def test_plots_are_written(tmp_path):
    tp = np.array([[1] * 10, [0] * 10, [1] * 10])
    ap_per_class(
        tp,
        np.array([0.9, 0.5, 0.4]),
        np.array([0, 0, 1]),
        np.array([0, 1]),
        plot=True,
        save_dir=tmp_path,
        names={0: "a", 1: "b"},
    )
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0]]), torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]]))
    cm.plot(save_dir=tmp_path, names=["a", "b"])
    for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0
