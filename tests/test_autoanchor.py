"""Tests for utils/autoanchor.py: BPR check, anchor replacement, k-means/genetic evolution, anchor order."""

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from utils.autoanchor import anchor_fit, check_anchor_order, check_anchors, kmean_anchors, label_wh

V61_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]  # P3, P4, P5
STRIDES = [8.0, 16.0, 32.0]


class FakeDetect(nn.Module):
    """The parts of Detect that AutoAnchor uses: anchors (nl, na, 2) in grid units, stride, na, nl."""

    def __init__(self, anchors=V61_ANCHORS, strides=STRIDES):
        super().__init__()
        self.nl, self.na = len(anchors), len(anchors[0]) // 2
        self.register_buffer("stride", torch.tensor(strides))
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", pixels / self.stride.view(-1, 1, 1))


class FakeModel(nn.Module):
    """A model whose .model[-1] is the Detect head, as in models.yolo.Model."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), FakeDetect())


def fake_dataset(w_range, h_range, n_images=40, per_image=5, seed=0):
    """A dataset-like object with .shapes (n, 2) and .labels [(k, 5) cls, x, y, w, h normalised]."""
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(n_images):
        wh = np.stack([rng.uniform(*w_range, per_image), rng.uniform(*h_range, per_image)], 1)
        labels.append(np.concatenate([np.zeros((per_image, 1)), np.full((per_image, 2), 0.5), wh], 1))
    return SimpleNamespace(shapes=np.tile([640, 480], (n_images, 1)), labels=labels)


def _pixel_anchors(m):
    """Detect anchors in pixels, (n, 2)."""
    return (m.anchors * m.stride.view(-1, 1, 1)).view(-1, 2).numpy()


def test_label_wh_scales_long_side_to_imgsz():
    ds = SimpleNamespace(shapes=np.array([[1280, 640]]), labels=[np.array([[0, 0.5, 0.5, 0.5, 0.5]])])
    wh = label_wh(ds, img_size=640)  # image becomes 640x320, jittered by 0.9..1.1
    assert wh.shape == (1, 2)
    assert 0.9 * 320 <= wh[0, 0] <= 1.1 * 320 and abs(wh[0, 0] / wh[0, 1] - 2) < 1e-5


def test_check_anchors_keeps_good_anchors():
    model = FakeModel()
    before = model.model[-1].anchors.clone()
    ds = fake_dataset((0.05, 0.5), (0.05, 0.5))
    assert anchor_fit(_pixel_anchors(model.model[-1]), label_wh(ds), 4.0)[0] >= 0.98
    check_anchors(ds, model, thr=4.0, imgsz=640)
    assert torch.equal(model.model[-1].anchors, before)


def test_check_anchors_replaces_poor_anchors_through_ddp_wrapper():
    model = FakeModel()
    m = model.model[-1]
    ds = fake_dataset((0.1, 0.5), (0.004, 0.01))  # very thin boxes: 64..320 x 2.5..6.4 px
    wh = label_wh(ds)
    bpr_before = anchor_fit(_pixel_anchors(m), wh, 4.0)[0]
    assert bpr_before < 0.98
    check_anchors(ds, SimpleNamespace(module=model), thr=4.0, imgsz=640)
    assert anchor_fit(_pixel_anchors(m), wh, 4.0)[0] > bpr_before
    expected = kmean_anchors(ds, n=9, img_size=640, thr=4.0, gen=1000, verbose=False)
    np.testing.assert_allclose(_pixel_anchors(m), expected, rtol=1e-5)  # installed as evolved, in P3..P5 order
    area = m.anchors.prod(-1).mean(-1) * m.stride**2
    assert area[0] <= area[-1]  # small anchors stay on P3
    assert m.anchors.dtype == torch.float32 and m.anchors.shape == (3, 3, 2)


def test_check_anchors_without_labels_changes_nothing():
    model = FakeModel()
    before = model.model[-1].anchors.clone()
    ds = SimpleNamespace(shapes=np.array([[640, 480]]), labels=[np.zeros((0, 5))])
    check_anchors(ds, model)
    assert torch.equal(model.model[-1].anchors, before)


def test_kmean_anchors_sorted_reproducible_and_fitting():
    ds = fake_dataset((0.02, 0.6), (0.02, 0.6))
    k = kmean_anchors(ds, n=9, img_size=640, thr=4.0, gen=200, verbose=False)
    assert k.shape == (9, 2) and k.dtype == np.float32
    assert np.all(np.diff(k.prod(1)) >= 0)
    np.testing.assert_array_equal(k, kmean_anchors(ds, n=9, img_size=640, thr=4.0, gen=200, verbose=False))
    assert anchor_fit(k, label_wh(ds), 4.0)[0] > 0.99


def test_kmean_anchors_with_fewer_boxes_than_anchors():
    ds = fake_dataset((0.1, 0.3), (0.1, 0.3), n_images=1, per_image=3)
    k = kmean_anchors(ds, n=9, img_size=640, gen=50, verbose=False)
    assert k.shape == (9, 2) and np.all(k >= 2.0)


def test_kmean_anchors_ignores_sub_2px_boxes():
    ds = fake_dataset((0.1, 0.3), (0.1, 0.3))
    ds.labels[0][:, 3:5] = 0.001  # 0.64 px boxes
    k = kmean_anchors(ds, n=6, img_size=640, gen=50, verbose=False)
    assert k.min() > 10  # the tiny boxes did not pull an anchor down


def test_check_anchor_order_flips_reversed_anchors():
    m = FakeDetect(anchors=V61_ANCHORS[::-1])  # large anchors on the stride-8 level
    reversed_anchors = m.anchors.clone()
    check_anchor_order(m)
    assert torch.equal(m.anchors, reversed_anchors.flip(0))
    area = m.anchors.prod(-1).mean(-1)
    assert area[0] < area[-1]
    good = FakeDetect()
    before = good.anchors.clone()
    check_anchor_order(good)
    assert torch.equal(good.anchors, before)


def test_kmean_anchors_from_dataset_yaml(tmp_path):
    import cv2

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.jpg"), np.full((48, 64, 3), 60 * i, np.uint8))
            (tmp_path / "labels" / split / f"{i}.txt").write_text(f"0 0.5 0.5 {0.1 + 0.2 * i:.2f} 0.3\n")
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnc: 1\nnames: ['box']\n")
    k = kmean_anchors(str(yaml_file), n=3, img_size=64, gen=20, verbose=False)
    assert k.shape == (3, 2) and np.all(np.diff(k.prod(1)) >= 0)
