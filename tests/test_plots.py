"""Tests for utils/plots.py and utils/metrics.py's curve plots: annotation, mosaics, label/result/curve/evolve plots."""

import cv2
import numpy as np
import pytest
import torch

from utils.metrics import plot_confusion_matrix, plot_mc_curve, plot_pr_curve
from utils.plots import (
    Annotator,
    colors,
    output_to_target,
    plot_evolve,
    plot_images,
    plot_labels,
    plot_results,
    save_one_box,
)

from conftest import V61_RESULTS_HEADER


def _image_shape(path):
    """(h, w, c) of a saved image, asserting the file is non-empty and readable."""
    assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    im = cv2.imread(str(path))
    assert im is not None, f"{path} is not a readable image"
    return im.shape


def test_colors_palette_is_20_distinct_and_cyclic():
    palette = [colors(i) for i in range(20)]
    assert len(set(palette)) == 20
    assert colors(21) == colors(1)
    assert colors(3, bgr=True) == colors(3)[::-1]


def test_annotator_default_line_width():
    assert Annotator(np.zeros((640, 640, 3), np.uint8)).lw == 2
    assert Annotator(np.zeros((1080, 1920, 3), np.uint8)).lw == max(round((1080 + 1920 + 3) / 2 * 0.003), 2)


def test_annotator_rejects_non_contiguous_image():
    with pytest.raises(TypeError, match="contiguous"):
        Annotator(np.zeros((64, 64, 3), np.uint8)[:, ::-1])


@pytest.mark.parametrize("pil", [False, True])
def test_box_label_at_top_edge_stays_inside_image(pil):
    color = (0, 0, 255)
    a = Annotator(np.zeros((100, 200, 3), np.uint8), pil=pil)
    a.box_label([60, 0, 160, 60], "person 0.9", color=color)
    im = a.result()
    filled = np.all(im == color, axis=2)
    rows = np.where(filled[:, 70:100].any(1))[0]  # columns inside the box, under the label start
    assert rows.min() == 0 and rows.max() > 8  # label background drawn downwards from the box top
    assert im[3:8, 65:100].any(2).all()  # and it is a filled background, not just the box outline


def test_box_label_above_box_when_room_and_clamped_at_right_edge():
    color = (0, 255, 0)
    a = Annotator(np.zeros((100, 200, 3), np.uint8))
    a.box_label([20, 50, 60, 90], "a", color=color)
    drawn = a.result().any(2)
    assert drawn[40:48, 22:28].all()  # label (background + text) sits above the box top (y=50)
    b = Annotator(np.zeros((100, 200, 3), np.uint8))
    b.box_label([190, 50, 199, 90], "a long label", color=color)
    drawn = b.result().any(2)
    assert drawn[40:48, 150:189].all()  # shifted left so the wide label fits inside the image


def test_output_to_target_shapes_and_values():
    out = [
        torch.tensor([[10.0, 20.0, 30.0, 60.0, 0.9, 2.0], [0.0, 0.0, 4.0, 4.0, 0.5, 0.0]]),
        torch.zeros(0, 6),
        torch.tensor([[1.0, 1.0, 3.0, 5.0, 0.7, 1.0]]),
    ]
    t = output_to_target(out)
    assert t.shape == (3, 7)
    np.testing.assert_allclose(t[0], [0, 2, 20, 40, 20, 40, 0.9], rtol=1e-6)
    np.testing.assert_array_equal(t[:, 0], [0, 0, 2])
    assert output_to_target([torch.zeros(0, 6)]).shape == (0, 7)


def test_plot_images_mosaic_shape_and_input_forms(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((4, 3, 64, 96), dtype=np.float32)
    targets = np.array([[0, 1, 0.5, 0.5, 0.2, 0.3], [3, 0, 0.9, 0.9, 0.4, 0.2]], np.float32)
    a = plot_images(
        torch.from_numpy(images),
        torch.from_numpy(targets),
        paths=["x/a.jpg"] * 4,
        fname=tmp_path / "a.jpg",
        names=["cat", "dog"],
    )
    assert _image_shape(tmp_path / "a.jpg") == (128, 192, 3)
    b = plot_images(images * 255, targets, paths=["x/a.jpg"] * 4, fname=tmp_path / "b.jpg", names=["cat", "dog"])
    pixel = targets.copy()
    pixel[:, [2, 4]] *= 96
    pixel[:, [3, 5]] *= 64
    c = plot_images(images, pixel, paths=["x/a.jpg"] * 4, fname=tmp_path / "c.jpg", names=["cat", "dog"])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # 0..1 tensors == 0..255 arrays
    np.testing.assert_array_equal(a, c)  # normalised boxes == pixel boxes
    assert not np.array_equal(a, plot_images(images, np.zeros((0, 6)), paths=["x/a.jpg"] * 4, fname=tmp_path / "d.jpg"))


def test_plot_images_shrinks_to_max_size_and_filters_low_conf(tmp_path):
    images = np.full((16, 3, 320, 320), 0.5, np.float32)
    plot_images(images, np.zeros((0, 6)), fname=tmp_path / "big.jpg", max_size=640)
    assert _image_shape(tmp_path / "big.jpg") == (640, 640, 3)
    weak = np.array([[0, 0, 100, 100, 50, 50, 0.2]], np.float32)
    strong = weak.copy()
    strong[0, 6] = 0.9
    out = tmp_path / "e.jpg"
    empty = plot_images(images[:1], np.zeros((0, 7)), fname=out)
    np.testing.assert_array_equal(plot_images(images[:1], weak, fname=out), empty)
    assert not np.array_equal(plot_images(images[:1], strong, fname=out), empty)


def test_plot_labels_writes_both_figures(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.concatenate([rng.integers(0, 3, (200, 1)), rng.random((200, 4)) * 0.5 + 0.1], 1)
    plot_labels(labels, names=["a", "b", "c"], save_dir=tmp_path)
    assert _image_shape(tmp_path / "labels.jpg") == (1600, 1600, 3)
    assert _image_shape(tmp_path / "labels_correlogram.jpg") == (1600, 1600, 3)


def test_plot_results_from_padded_csv(tmp_path):
    file = tmp_path / "results.csv"
    rows = [",".join(f"{k:>20s}" for k in V61_RESULTS_HEADER)]
    rows += [",".join(f"{v:>20.5g}" for v in [e] + [0.1 * (e + 1)] * 13) for e in range(3)]
    file.write_text("\n".join(rows) + "\n")
    plot_results(file)
    assert _image_shape(tmp_path / "results.png") == (1200, 2400, 3)


def test_plot_results_bad_csv_names_the_file(tmp_path):
    file = tmp_path / "results.csv"
    file.write_text("epoch, train/box_loss\n0, abc\n")
    with pytest.raises(ValueError, match="results.csv"):
        plot_results(file)


@pytest.mark.parametrize("n_classes", [3, 25])
def test_pr_and_mc_curves(tmp_path, n_classes):
    rng = np.random.default_rng(0)
    px = np.linspace(0, 1, 1000)
    py = [np.sort(rng.random(1000))[::-1] for _ in range(n_classes)]
    names = {i: f"c{i}" for i in range(n_classes)}
    plot_pr_curve(px, py, rng.random((n_classes, 10)), tmp_path / "PR_curve.png", names)
    plot_mc_curve(px, np.stack(py), tmp_path / "F1_curve.png", names, ylabel="F1")
    assert _image_shape(tmp_path / "PR_curve.png") == (1500, 2250, 3)
    assert _image_shape(tmp_path / "F1_curve.png") == (1500, 2250, 3)


def test_confusion_matrix(tmp_path):
    matrix = np.random.default_rng(0).integers(0, 10, (4, 4)).astype(float)
    plot_confusion_matrix(matrix, 3, ["a", "b", "c"], tmp_path)
    assert _image_shape(tmp_path / "confusion_matrix.png") == (2250, 3000, 3)
    with pytest.raises(ValueError, match="matrix shape"):
        plot_confusion_matrix(matrix, 4, ["a"], tmp_path)


def test_save_one_box_crops_and_increments(tmp_path):
    im = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    file = tmp_path / "crops" / "c.jpg"
    crop = save_one_box([10, 10, 50, 60], im, file=file, BGR=True)  # 40x50 box * 1.02 + 10 px around (30, 35)
    np.testing.assert_array_equal(crop, im[4:65, 4:55])
    rgb = save_one_box([10, 10, 50, 60], im, file=file)
    np.testing.assert_array_equal(rgb, crop[..., ::-1])
    assert (tmp_path / "crops" / "c.jpg").is_file() and (tmp_path / "crops" / "c2.jpg").is_file()
    edge = save_one_box([0, 0, 200, 200], im, save=False, square=True)
    assert edge.shape == im.shape  # clipped to the image


def test_plot_evolve(tmp_path):
    keys = [
        "metrics/precision",
        "metrics/recall",
        "metrics/mAP_0.5",
        "metrics/mAP_0.5:0.95",
        "val/box_loss",
        "val/obj_loss",
        "val/cls_loss",
        "lr0",
        "momentum",
        "box",
    ]
    rng = np.random.default_rng(0)
    rows = [",".join(f"{k:>20s}" for k in keys)] + [",".join(f"{v:>20.5g}" for v in rng.random(10)) for _ in range(6)]
    (tmp_path / "evolve.csv").write_text("\n".join(rows) + "\n")
    out = plot_evolve(tmp_path / "evolve.csv")
    assert out == tmp_path / "evolve.png"
    h, w, _ = _image_shape(out)
    assert (h, w) == (1200, 1000)  # 3 hyps -> 2x2 grid of (2.5 x 3 in) at 200 dpi
