"""Tests for utils.loss: target assignment, loss properties, and the v6.1 oracle loss on a real checkpoint."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from utils.loss import ComputeLoss, FocalLoss, smooth_BCE

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}


def _fake_model(nc=2, hyp=HYP):
    """Object with the attributes ComputeLoss reads: hyp and a Detect-like last layer (3 levels, 3 anchors)."""
    anchors = torch.tensor(
        [
            [[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]],
            [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]],
            [[3.625, 2.8125], [4.875, 6.1875], [11.65625, 10.1875]],
        ]
    )
    det = SimpleNamespace(na=3, nc=nc, nl=3, anchors=anchors, stride=torch.tensor([8.0, 16.0, 32.0]))
    return SimpleNamespace(hyp=dict(hyp), gr=1.0, model=[det])


def _preds(bs=2, nc=2, img=64, requires_grad=False):
    """Random raw maps (bs, 3, ny, nx, 5+nc) for the three strides."""
    return [torch.randn(bs, 3, img // s, img // s, 5 + nc, requires_grad=requires_grad) for s in (8, 16, 32)]


def test_smooth_bce_targets():
    assert smooth_BCE(0.0) == (1.0, 0.0)
    assert smooth_BCE(0.1) == pytest.approx((0.95, 0.05))


def test_missing_hyp_is_a_clear_error():
    model = _fake_model()
    del model.hyp["anchor_t"]
    with pytest.raises(ValueError, match="anchor_t"):
        ComputeLoss(model)


def test_neighbour_cells_are_assigned():
    loss = ComputeLoss(_fake_model())
    preds = _preds(bs=1)
    # level 0 is 8x8: centre at grid (2.3, 5.7), box (1.25, 1.625) cells is within anchor_t of all 3 anchors
    t = torch.tensor([[0, 1, 2.3 / 8, 5.7 / 8, 1.25 / 8, 1.625 / 8]])
    tcls, tbox, (b, a, gj, gi), anch = loss.build_targets(preds, t)[0]
    for k in (0, 1, 2):
        assert sorted(zip(gi[a == k].tolist(), gj[a == k].tolist())) == [(1, 5), (2, 5), (2, 6)]  # own, left, bottom
    assert sorted(a.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and set(tcls.tolist()) == {1} and set(b.tolist()) == {0}
    own = (gi == 2) & (gj == 5) & (a == 0)
    assert torch.allclose(tbox[own], torch.tensor([[0.3, 0.7, 1.25, 1.625]]), atol=1e-5)
    assert torch.allclose(anch, loss.anchors[0][a])
    left = (gi == 1) & (a == 0)
    assert torch.allclose(tbox[left, :2], torch.tensor([[1.3, 0.7]]), atol=1e-5)


def test_anchor_ratio_filter_and_edge_clamp():
    loss = ComputeLoss(_fake_model())
    preds = _preds(bs=1)
    tiny = torch.tensor([[0, 0, 0.5, 0.5, 0.01, 0.01]])  # 0.08 cells: every level-0 anchor is > 4x larger
    assert loss.build_targets(preds, tiny)[0][0].numel() == 0
    edge = torch.tensor([[0, 0, 1.0, 1.0, 1.25 / 8, 1.625 / 8]])  # centre on the far image corner
    _, tbox, (_, _, gj, gi), _ = loss.build_targets(preds, edge)[0]
    assert gi.max() == 7 and gj.max() == 7 and (tbox[:, :2] <= 1.5).all()


def test_loss_without_targets_is_objectness_only():
    loss_fn = ComputeLoss(_fake_model())
    preds = _preds(requires_grad=True)
    loss, items = loss_fn(preds, torch.zeros((0, 6)))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    assert loss.item() == pytest.approx(items.sum().item() * 2, rel=1e-6)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)


def test_loss_gradients_reach_box_and_class_logits():
    loss_fn = ComputeLoss(_fake_model())
    preds = _preds(requires_grad=True)
    targets = torch.tensor([[0, 0, 0.4, 0.4, 0.1, 0.1], [1, 1, 0.6, 0.3, 0.3, 0.5]])
    loss, items = loss_fn(preds, targets)
    assert (items > 0).all()
    loss.backward()
    assert preds[0].grad[..., :4].abs().sum() > 0 and preds[0].grad[..., 5:].abs().sum() > 0


def test_focal_loss_downweights_easy_examples():
    bce = torch.nn.BCEWithLogitsLoss()
    focal = FocalLoss(torch.nn.BCEWithLogitsLoss(), gamma=1.5)
    easy, hard, target = torch.tensor([6.0]), torch.tensor([-1.0]), torch.tensor([1.0])
    assert focal(easy, target) / bce(easy, target) < focal(hard, target) / bce(hard, target)
    hyp = dict(HYP, fl_gamma=1.5)
    assert isinstance(ComputeLoss(_fake_model(hyp=hyp)).bce_obj, FocalLoss)


def test_loss_matches_v61_reference(reference, ref_weights):
    from models.loading import attempt_load

    expected = json.loads((reference / "loss.json").read_text())
    images = torch.from_numpy(np.load(reference / "loss_batch_images.npy"))
    targets = torch.from_numpy(np.load(reference / "loss_batch_targets.npy"))
    model = attempt_load(ref_weights, fuse=False).eval()
    model.hyp = expected["hyp_after_scaling"]
    model.gr = 1.0
    with torch.no_grad():
        raw = model(images)[1]
    loss, items = ComputeLoss(model)(raw, targets)
    assert loss.item() == pytest.approx(expected["loss_total"], rel=1e-5)
    assert items.tolist() == pytest.approx(expected["lbox_lobj_lcls"], rel=1e-5)
