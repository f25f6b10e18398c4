"""Letterbox oracle and properties of the training augmentations."""

import cv2
import numpy as np
import pytest

from utils.augmentations import augment_hsv, box_candidates, letterbox, mixup, random_perspective


def test_letterbox_matches_v61_oracle(shared, reference):
    im = cv2.imread(str(shared / "images" / "bus.jpg"))
    out, ratio, (dw, dh) = letterbox(im, 320, auto=False)
    x = out[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    ref = np.load(reference / "bus_input_320.npy")
    assert x.shape == ref.shape
    assert np.abs(x - ref).max() < 1e-6
    assert ratio == (320 / 1080, 320 / 1080) and dh == 0


@pytest.mark.parametrize("h, w", [(100, 300), (300, 100), (257, 511)])
def test_letterbox_auto_pads_to_stride_multiple(h, w):
    im = np.zeros((h, w, 3), np.uint8)
    out, (r, _), (dw, dh) = letterbox(im, 320, auto=True, stride=32)
    assert max(out.shape[:2]) == 320
    assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0
    assert abs(out.shape[1] - (round(w * r) + 2 * dw)) < 1 and abs(out.shape[0] - (round(h * r) + 2 * dh)) < 1


def test_letterbox_scalefill_and_no_scaleup():
    im = np.full((100, 200, 3), 7, np.uint8)
    out, ratio, pad = letterbox(im, 320, auto=False, scaleFill=True)
    assert out.shape == (320, 320, 3) and ratio == (1.6, 3.2) and pad == (0, 0)
    out, ratio, pad = letterbox(im, 320, auto=False, scaleup=False)
    assert out.shape == (320, 320, 3) and ratio == (1.0, 1.0)
    assert (out[160, 60:260] == 7).all() and (out[0, 0] == 114).all()  # image kept at 1x, centred in gray


def test_augment_hsv_in_place_and_noop():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = im.copy()
    augment_hsv(im, 0, 0, 0, rng=rng)
    assert (im == before).all()
    augment_hsv(im, 0.5, 0.5, 0.5, rng=rng)
    assert im.dtype == np.uint8 and im.shape == before.shape and (im != before).any()


def test_random_perspective_identity_keeps_image_and_boxes():
    im = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    targets = np.array([[1, 10, 20, 50, 60], [0, 60, 5, 90, 40]], dtype=np.float64)
    out, t = random_perspective(
        im, targets, degrees=0, translate=0, scale=0, shear=0, perspective=0, rng=np.random.default_rng(0)
    )
    assert (out == im).all()
    assert np.allclose(t, targets)


def test_random_perspective_border_crops_to_inner_size_and_clips_boxes():
    im = np.full((128, 128, 3), 50, np.uint8)
    targets = np.array([[2, 0, 0, 128, 128], [1, 60, 60, 70, 70]], dtype=np.float64)
    out, t = random_perspective(
        im,
        targets,
        degrees=10,
        translate=0.1,
        scale=0.5,
        shear=2,
        perspective=0.0005,
        border=(-32, -32),
        rng=np.random.default_rng(3),
    )
    assert out.shape == (64, 64, 3)
    assert len(t) and (t[:, 1:] >= 0).all() and (t[:, [1, 3]] <= 64).all() and (t[:, [2, 4]] <= 64).all()
    assert (t[:, 3] > t[:, 1]).all() and (t[:, 4] > t[:, 2]).all()


def test_random_perspective_segments_give_tight_boxes():
    im = np.zeros((100, 100, 3), np.uint8)
    square = np.array([[20, 20], [60, 20], [60, 60], [20, 60]], dtype=np.float64)
    targets = np.array([[0, 20, 20, 60, 60]], dtype=np.float64)
    _, t = random_perspective(
        im, targets, segments=[square], degrees=45, translate=0, scale=0, shear=0, rng=np.random.default_rng(0)
    )
    assert t.shape == (1, 5)
    w, h = t[0, 3] - t[0, 1], t[0, 4] - t[0, 2]
    assert w == pytest.approx(h, abs=1e-6) and 40 < w <= 40 * np.sqrt(2) + 1e-6  # rotated square's enclosing box


def test_box_candidates_rejects_small_thin_and_shrunk_boxes():
    before = np.array([[0, 0, 100, 100]] * 4, dtype=np.float64).T
    after = np.array([[0, 0, 90, 90], [0, 0, 1.5, 50], [0, 0, 30, 30], [0, 0, 300, 2.5]], dtype=np.float64).T
    assert box_candidates(before, after).tolist() == [True, False, False, False]


def test_mixup_blends_images_and_concatenates_labels():
    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    la, lb = np.array([[0, 1, 1, 4, 4]]), np.array([[1, 2, 2, 6, 6], [2, 0, 0, 3, 3]])
    im, labels = mixup(a, la, b, lb, rng=np.random.default_rng(0))
    assert 60 < im.mean() < 140  # Beta(32, 32) ratio stays close to 0.5
    assert labels.tolist() == la.tolist() + lb.tolist()


def test_augmentations_depend_only_on_the_generator_seed():
    im = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    targets = np.array([[1, 10, 10, 40, 40]], dtype=np.float64)

    def augmented(seed, global_seed=0):
        rng, out = np.random.default_rng(seed), im.copy()
        np.random.seed(global_seed)  # the global stream must not matter
        augment_hsv(out, rng=rng)
        return random_perspective(out, targets, rng=rng)

    (a, ta), (b, tb), (c, _) = augmented(0), augmented(0, global_seed=7), augmented(1)
    assert (a == b).all() and np.array_equal(ta, tb) and (a != c).any()
