"""Dataset listing, image/label checks, label cache, rect batches, mosaic, loaders and the synthetic set."""

import json
import logging
import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from utils import synthetic
from utils.datasets import LoadImages, LoadImagesAndLabels, LoadStreams, create_dataloader, img2label_paths, list_files
from utils.synthetic import make_shapes

ROOT = Path(__file__).resolve().parents[1]
HYP = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


@pytest.fixture
def logs():
    """Messages logged by the project logger during the test."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger = logging.getLogger("yolov5")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def write_image(path, h=64, w=80, seed=0):
    """A small random JPEG/PNG image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def write_pair(root, name, rows, split="train", **kw):
    """An image under root/images/split and its label under root/labels/split."""
    im = write_image(root / "images" / split / name, **kw)
    lb = root / "labels" / split / (Path(name).stem + ".txt")
    lb.parent.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        lb.write_text(rows)
    return im


@pytest.fixture
def tiny(tmp_path):
    """A 6-image dataset with normal labels."""
    for i in range(6):
        rows = f"{i % 2} 0.5 0.5 0.4 0.3\n0 0.25 0.3 0.2 0.2\n"
        write_pair(tmp_path, f"im{i}.jpg", rows, h=60 + 10 * i, w=90, seed=i)
    return tmp_path


def test_img2label_paths_replaces_last_images_dir():
    p = f"{os.sep}data{os.sep}images{os.sep}x{os.sep}images{os.sep}a.b.jpg"
    assert img2label_paths([p]) == [f"{os.sep}data{os.sep}images{os.sep}x{os.sep}labels{os.sep}a.b.txt"]


def test_list_files_dir_glob_txt_list_and_missing(tiny, logs):
    d = tiny / "images" / "train"
    lines = ["images/train/im0.jpg", "", "./images/train/im1.jpg", str(d / "im2.jpg"), "gone.jpg"]
    (tiny / "list.txt").write_text("\n".join(lines) + "\n")
    assert len(list_files(str(d))) == 6
    assert len(list_files(str(d / "im*.jpg"))) == 6
    assert [Path(f).name for f in list_files(tiny / "list.txt")] == ["im0.jpg", "im1.jpg", "im2.jpg"]
    assert any("list.txt: 1 listed files do not exist" in m and "gone.jpg" in m for m in logs)
    assert len(list_files([str(d / "im0.jpg"), str(tiny / "list.txt")])) == 4
    with pytest.raises(FileNotFoundError, match="nope"):
        list_files(str(tiny / "nope"))


def test_bad_inputs_are_reported_with_file_name_and_skipped(tmp_path, logs):
    root = tmp_path
    write_pair(root, "good.jpg", "0 0.5 0.5 0.2 0.2\n")
    write_pair(root, "background.jpg", None)  # no label file: kept, counted missing
    write_pair(root, "empty.jpg", "")
    write_pair(root, "dupes.jpg", "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n")
    bad = {
        "cols.jpg": "0 0.5 0.5 0.2\n",
        "range.jpg": "0 0.5 1.5 0.2 0.2\n",
        "neg.jpg": "-1 0.5 0.5 0.2 0.2\n",
        "frac.jpg": "0.5 0.5 0.5 0.2 0.2\n",
        "nan.jpg": "0 nan 0.5 0.2 0.2\n",
        "text.jpg": "0 a 0.5 0.2 0.2\n",
        "tiny.jpg": "0 0.5 0.5 0.2 0.2\n",
    }
    for name, rows in bad.items():
        write_pair(root, name, rows, **({"h": 5, "w": 5} if name == "tiny.jpg" else {}))
    (root / "images" / "train" / "notimage.png").write_text("this is not a png")
    (root / "images" / "train" / "garbage.jpg").write_bytes(os.urandom(300))
    ds = LoadImagesAndLabels(str(root / "images" / "train"), img_size=64)
    kept = sorted(Path(f).name for f in ds.img_files)
    assert kept == ["background.jpg", "dupes.jpg", "empty.jpg", "good.jpg"]
    text = "\n".join(logs)
    for name in [*bad, "notimage.png", "garbage.jpg"]:
        assert f"{name}: ignoring corrupt image/label" in text, name
    assert "dupes.txt: 1 duplicate labels removed" in text
    assert ds.labels[ds.img_files.index(str(root / "images" / "train" / "dupes.jpg"))].shape == (2, 5)
    assert json.loads(ds.cache_path.read_text())["results"] == [1, 9, 1, 9]  # missing, found, empty, corrupt


def test_truncated_jpeg_is_repaired_into_the_cache_not_over_the_file(tmp_path, logs):
    im = write_pair(tmp_path, "cut.jpg", "0 0.5 0.5 0.2 0.2\n", h=64, w=64)
    im.write_bytes(im.read_bytes()[:-200])
    original = im.read_bytes()
    ds = LoadImagesAndLabels(str(tmp_path / "images" / "train"), img_size=64)
    assert ds.n == 1 and im.read_bytes() == original
    repaired = Path(ds.repaired[0])
    assert repaired.parent == tmp_path / "labels" / "train.cache-images" and repaired.is_file()
    assert np.array_equal(ds._read(0), np.load(repaired)) and ds[0][0].shape == (3, 64, 64)
    assert any("cut.jpg: corrupt JPEG (truncated): its decodable part is cached in" in m for m in logs)


def test_label_cache_is_reused_and_invalidated_on_change(tiny, logs):
    path = str(tiny / "images" / "train")
    ds = LoadImagesAndLabels(path, img_size=64)
    cache = tiny / "labels" / "train.cache"
    assert cache.exists() and ds.cache_path == cache
    logs.clear()
    LoadImagesAndLabels(path, img_size=64)
    assert any("(from cache)" in m for m in logs)
    lb = tiny / "labels" / "train" / "im0.txt"
    stat = lb.stat()
    lb.write_text(lb.read_text().replace("0 0.5", "1 0.5"))  # same size, new content
    os.utime(lb, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    logs.clear()
    ds = LoadImagesAndLabels(path, img_size=64)
    assert not any("(from cache)" in m for m in logs)
    assert ds.labels[0][0, 0] == 1


def test_read_only_label_dir_warns_and_skips_cache(tiny, logs):
    labels = tiny / "labels"
    labels.chmod(0o555)
    try:
        ds = LoadImagesAndLabels(str(tiny / "images" / "train"), img_size=64)
    finally:
        labels.chmod(0o755)
    assert ds.n == 6 and not (labels / "train.cache").exists()
    assert any("not writeable" in m for m in logs)


def test_val_batch_matches_v61_reference(raccoon_val_copy, reference):
    ds = LoadImagesAndLabels(str(raccoon_val_copy), img_size=256, batch_size=4)
    im, targets, paths, shapes = ds.collate_fn([ds[i] for i in range(4)])
    assert [Path(p).name for p in paths] == ["raccoon-102.jpg", "raccoon-107.jpg", "raccoon-111.jpg", "raccoon-116.jpg"]
    assert np.abs(im.numpy() / 255.0 - np.load(reference / "loss_batch_images.npy")).max() < 1e-6
    assert np.abs(targets.numpy() - np.load(reference / "loss_batch_targets.npy")).max() < 1e-5
    assert shapes[0] == ((194, 259), ((191 / 194, 256 / 259), (0.0, 32.5)))


def test_rect_batch_shapes_on_raccoon_val(raccoon_val_copy):
    ds = LoadImagesAndLabels(str(raccoon_val_copy), img_size=320, batch_size=8, rect=True, stride=32, pad=0.5)
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all() and len(ds.batch_shapes) == 5
    for b in range(5):
        a = ar[ds.batch == b]
        rel = [a.max(), 1] if a.max() < 1 else [1, 1 / a.min()] if a.min() > 1 else [1, 1]
        assert ds.batch_shapes[b].tolist() == (np.ceil(np.array(rel) * 320 / 32 + 0.5).astype(int) * 32).tolist()
    for i in (0, 13, 39):
        im, labels, _, _ = ds[i]
        assert list(im.shape[1:]) == ds.batch_shapes[ds.batch[i]].tolist()
        assert ((labels[:, 2:] >= 0) & (labels[:, 2:] <= 1)).all()


def test_mosaic_shapes_labels_inside_and_deterministic(tiny):
    ds = LoadImagesAndLabels(str(tiny / "images" / "train"), img_size=96, augment=True, hyp={**HYP, "mixup": 0.5})
    random.seed(0)
    np.random.seed(0)
    first = [ds[i] for i in range(6)]
    for im, labels, _, shapes in first:
        assert im.shape == (3, 96, 96) and im.dtype == torch.uint8 and shapes is None
        xywh = labels[:, 2:]
        assert ((xywh >= 0) & (xywh <= 1)).all()
        assert ((xywh[:, :2] - xywh[:, 2:] / 2 >= -1e-3) & (xywh[:, :2] + xywh[:, 2:] / 2 <= 1 + 1e-3)).all()
    assert sum(len(lb) for _, lb, _, _ in first) > 0
    random.seed(0)
    np.random.seed(0)
    assert all((a[0] == b[0]).all() and torch.equal(a[1], b[1]) for a, b in zip(first, [ds[i] for i in range(6)]))


def test_collate_single_cls_and_image_cache(tiny):
    path = str(tiny / "images" / "train")
    ds = LoadImagesAndLabels(path, img_size=64, single_cls=True)
    im, targets, _, _ = ds.collate_fn([ds[0], ds[1], ds[2]])
    assert im.shape[0] == 3 and targets[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert (targets[:, 1] == 0).all()
    plain = ds[3][0]
    for mode in ("ram", "disk"):
        cached = LoadImagesAndLabels(path, img_size=64, single_cls=True, cache_images=mode)
        assert cached.cache_mode == mode and torch.equal(cached[3][0], plain)
    assert list((tiny / "images" / "train").glob("*.npy")) == []
    assert len(list((tiny / "labels" / "train.cache-images").glob("*.npy"))) == 6


def test_create_dataloader_rect_disables_shuffle_and_is_seeded(tiny, logs):
    loader, ds = create_dataloader(str(tiny / "images" / "train"), 64, 4, 32, rect=True, shuffle=True, workers=0)
    assert any("--rect is incompatible" in m for m in logs)
    im, targets, paths, shapes = next(iter(loader))
    assert im.shape[0] == 4 and list(paths) == ds.img_files[:4]

    def first_batch():
        loader, _ = create_dataloader(
            str(tiny / "images" / "train"), 64, 3, 32, hyp=HYP, augment=True, shuffle=True, workers=0, seed=5
        )
        random.seed(0)
        np.random.seed(0)
        return next(iter(loader))

    a, b = first_batch(), first_batch()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def write_video(path, n=5, h=48, w=64):
    """A short MJPG .avi whose frame i has brightness 40*i."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for i in range(n):
        vw.write(np.full((h, w, 3), 40 * i, np.uint8))
    vw.release()
    return path


def test_load_images_file_dir_glob_txt_and_video(tmp_path, logs):
    d = tmp_path / "src"
    for i in range(3):
        write_image(d / f"{i}.jpg", h=50, w=100, seed=i)
    (d / "broken.png").write_text("not an image")
    (tmp_path / "list.txt").write_text("src/0.jpg\nsrc/2.jpg\n")
    for source, n in [(d / "0.jpg", 1), (d, 3), (d / "*.jpg", 3), (tmp_path / "list.txt", 2)]:
        items = list(LoadImages(str(source), img_size=64, stride=32))
        assert len(items) == n
        path, im, im0, cap, s = items[0]
        assert im.shape == (3, 32, 64) and im0.shape == (50, 100, 3) and cap is None
        assert s == f"image 1/{len(LoadImages(str(source)))} {path}: "
    assert any("broken.png: could not be read, skipping" in m for m in logs)
    video = write_video(tmp_path / "clip.avi")
    frames = list(LoadImages(str(video), img_size=64))
    assert len(frames) == 5 and frames[2][4] == f"video 1/1 (3/5) {video}: " and frames[0][3] is not None
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        LoadImages(str(tmp_path / "missing.jpg"))


def test_load_streams_reads_a_video_until_it_ends(tmp_path):
    video = write_video(tmp_path / "clip.avi", n=4)
    stream = LoadStreams(str(video), img_size=64)
    batches = list(stream)
    assert batches and batches[0][1].shape == (1, 3, 64, 64) and batches[0][0] == [str(video)]
    with pytest.raises(ConnectionError, match="nowhere"):
        LoadStreams(str(tmp_path / "nowhere.avi"))


def test_synthetic_shapes_are_deterministic_and_labels_exact(tmp_path):
    a, b = (make_shapes(tmp_path / d, n_train=6, n_val=2, seed=3) for d in "ab")
    files = sorted(p.relative_to(a) for p in a.rglob("*.*"))
    assert len(files) == 16 and files == sorted(p.relative_to(b) for p in b.rglob("*.*"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    for lb_file in (a / "labels" / "train").glob("*.txt"):
        h, w = cv2.imread(str(a / "images" / "train" / (lb_file.stem + ".jpg"))).shape[:2]
        for c, x, y, bw, bh in np.loadtxt(lb_file, ndmin=2):
            assert c in (0, 1, 2, 3) and 20 <= bw * w <= 130 and 20 <= bh * h <= 130
            assert 0 <= x - bw / 2 and x + bw / 2 <= 1 and 0 <= y - bh / 2 and y + bh / 2 <= 1


@pytest.mark.parametrize("cls", [0, 1, 2, 3])
def test_synthetic_boxes_enclose_drawn_pixels_exactly(cls):
    rng = np.random.default_rng(cls)
    for size in (24, 57, 89):
        canvas = np.zeros((200, 200, 3), np.uint8)
        x1, y1, x2, y2 = synthetic._draw(canvas, rng, cls, 100, 100, size)
        ys, xs = np.nonzero(canvas.any(2))
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_augment_without_hyp_builds_for_anchor_stats_but_cannot_load(tiny):
    ds = LoadImagesAndLabels(str(tiny / "images" / "train"), augment=True, rect=True)  # as autoanchor builds it
    assert ds.shapes.shape == (6, 2) and len(ds.labels) == 6
    with pytest.raises(ValueError, match="needs hyp"):
        ds[0]


def _tree(root):
    """{relative path: (bytes, mtime)} of every file under root."""
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_nothing_under_the_image_and_label_folders_changes(tiny):
    im = write_pair(tiny, "cut.jpg", "0 0.5 0.5 0.2 0.2\n", h=64, w=64)
    im.write_bytes(im.read_bytes()[:-200])
    before = {d: _tree(tiny / d / "train") for d in ("images", "labels")}
    for cache in ("disk", "ram", None):
        ds = LoadImagesAndLabels(str(tiny / "images" / "train"), img_size=64, augment=True, hyp=HYP, cache_images=cache)
        [ds[i] for i in range(ds.n)]
    assert {d: _tree(tiny / d / "train") for d in ("images", "labels")} == before


def test_disk_cache_is_invalidated_when_the_image_changes(tiny):
    path = str(tiny / "images" / "train")
    ds = LoadImagesAndLabels(path, img_size=64, cache_images="disk")
    old_npy = ds.npy_files[0]
    assert old_npy.is_file()
    im_file = Path(ds.img_files[0])
    new_pixels = np.full((64, 80, 3), 200, np.uint8)
    cv2.imwrite(str(im_file), new_pixels)  # same name, new content
    ds = LoadImagesAndLabels(path, img_size=64, cache_images="disk")
    assert ds.npy_files[0] != old_npy and not old_npy.exists(), "the stale .npy is replaced and removed"
    assert np.abs(ds._read(0).astype(int) - 200).max() <= 2


def test_polygon_rows_become_their_bounding_boxes(tmp_path):
    rows = "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.5 0.5 0.2 0.2\n2 0.2 0.2 0.4 0.3 0.3 0.5\n"
    write_pair(tmp_path, "poly.jpg", rows, h=64, w=64)
    ds = LoadImagesAndLabels(str(tmp_path / "images" / "train"), img_size=64)
    expected = [[0, 0.3, 0.4, 0.4, 0.4], [1, 0.5, 0.5, 0.2, 0.2], [2, 0.3, 0.35, 0.2, 0.3]]
    assert np.allclose(ds.labels[0], expected, atol=1e-6)


@pytest.mark.parametrize("row", ["0 0.5 0.5 0.2", "0 0.1 0.1 0.2 0.2 0.3", "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4"])
def test_rows_that_are_neither_box_nor_polygon_are_reported(tmp_path, logs, row):
    write_pair(tmp_path, "a.jpg", "0 0.5 0.5 0.2 0.2\n", h=64, w=64)
    write_pair(tmp_path, "b.jpg", row + "\n", h=64, w=64, seed=1)
    ds = LoadImagesAndLabels(str(tmp_path / "images" / "train"), img_size=64)
    assert ds.n == 1
    assert any("b.jpg: ignoring corrupt image/label: label row 1" in m and "polygon" in m for m in logs)


def test_extreme_aspect_ratio_image_trains_and_loads(tmp_path):
    write_pair(tmp_path, "wide.jpg", "0 0.5 0.5 0.5 0.5\n", h=50, w=10000)
    write_pair(tmp_path, "tall.png", "0 0.5 0.5 0.5 0.5\n", h=10000, w=50, seed=1)
    write_pair(tmp_path, "ok.jpg", "0 0.5 0.5 0.2 0.2\n", h=64, w=64, seed=2)
    for rect in (False, True):
        ds = LoadImagesAndLabels(
            str(tmp_path / "images" / "train"), img_size=64, augment=not rect, hyp=HYP, rect=rect, batch_size=3
        )
        for i in range(ds.n):
            im = ds[i][0]
            assert im.shape[0] == 3 and min(im.shape[1:]) >= 1


_INVERSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_90",
    7: "TRANSVERSE",
    8: "ROTATE_270",
}  # PIL transpose that undoes each EXIF orientation
# (extension, PIL mode, save options); the displayed image is dark with a bright box at x 0.1-0.4, y 0.2-0.5
FORMATS = [
    ("jpg", "RGB", {"quality": 100}),
    ("jpeg", "RGB", {"quality": 100}),
    ("png", "RGB", {}),
    ("png", "RGBA", {}),
    ("png", "P", {}),
    ("png", "L", {}),
    ("png", "I;16", {}),
    ("tif", "RGB", {}),
    ("webp", "RGB", {"lossless": True}),
    ("bmp", "RGB", {}),
]


def _displayed(h=40, w=60):
    im = np.full((h, w, 3), 30, np.uint8)
    im[int(0.2 * h) : int(0.5 * h), int(0.1 * w) : int(0.4 * w)] = (60, 200, 240)  # BGR
    im[-4:, -4:] = (250, 30, 30)  # an asymmetric corner: any wrong flip or rotation shows
    return im


def _write_oriented(path, mode, options, orientation):
    """Store _displayed() so that a viewer applying EXIF `orientation` shows it; returns the displayed BGR."""
    from PIL import Image

    shown = _displayed()
    pil = Image.fromarray(shown[..., ::-1].copy())
    if orientation in _INVERSE:
        pil = pil.transpose(getattr(Image.Transpose, _INVERSE[orientation]))
    if mode == "I;16":
        pil = Image.fromarray(np.asarray(pil.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        pil = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)  # exact for these 3 colours
    elif mode != "RGB":
        pil = pil.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, **options, **({} if path.suffix == ".bmp" else {"exif": exif.tobytes()}))
    if mode in ("RGB", "RGBA", "P"):
        return shown
    return np.repeat(cv2.cvtColor(shown, cv2.COLOR_BGR2GRAY)[..., None], 3, 2)


@pytest.mark.parametrize("ext,mode,options", FORMATS)
def test_every_format_and_exif_orientation_reads_as_displayed(tmp_path, ext, mode, options):
    from PIL import Image, ImageOps

    from utils.sources import imread

    for o in range(1, 9) if ext not in ("bmp", "tif") else [1]:  # TIFF orientation: Pillow's, version-dependent
        path = tmp_path / f"{mode.replace(';', '')}_{o}.{ext}"
        expected = _write_oriented(path, mode, options, o)
        got = imread(path)
        with Image.open(path) as pil:  # PIL's own EXIF transpose agrees on the displayed size
            assert ImageOps.exif_transpose(pil).size == (got.shape[1], got.shape[0]) == (60, 40), (path, o)
        tol = 3 if ext in ("jpg", "jpeg") else 0
        assert np.abs(got.astype(int) - expected).mean() <= tol and got.shape == expected.shape, (path, o)


@pytest.mark.parametrize("ext,mode,options", [FORMATS[0], FORMATS[2], FORMATS[6], FORMATS[8]])
def test_oriented_images_train_val_and_detect_with_their_labels(tmp_path, ext, mode, options):
    for o in range(1, 9):
        _write_oriented(tmp_path / "images" / "train" / f"{o}.{ext}", mode, options, o)
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train" / f"{o}.txt").write_text("0 0.25 0.35 0.3 0.3\n")
    for augment in (False, True):
        hyp = {
            **HYP,
            "mosaic": 0.0,
            "degrees": 0,
            "translate": 0,
            "scale": 0,
            "shear": 0,
            "fliplr": 0,
            "hsv_h": 0,
            "hsv_s": 0,
            "hsv_v": 0,
        }
        ds = LoadImagesAndLabels(str(tmp_path / "images" / "train"), img_size=64, augment=augment, hyp=hyp)
        assert ds.n == 8 and (ds.shapes == [60, 40]).all()
        for i in range(ds.n):
            im, labels, path, _ = ds[i]
            _, x, y, w, h = (labels[0, 1:] * torch.tensor([1, 64, 64, 64, 64])).tolist()
            inside = im[:, int(y - h / 2) + 2 : int(y + h / 2) - 2, int(x - w / 2) + 2 : int(x + w / 2) - 2].float()
            assert inside.mean() > 120, f"{path}: the label box does not cover the bright box"
    for path, _, im0, _, _ in LoadImages(str(tmp_path / "images" / "train"), img_size=64):
        assert im0.shape[:2] == (40, 60) and int(im0[-1, -1, 0]) > int(im0[0, -1, 0]) + 15, path  # the marked corner


def test_small_training_sets_are_decoded_once_into_ram(tiny, logs, monkeypatch):
    path = str(tiny / "images" / "train")
    ds = LoadImagesAndLabels(path, img_size=96, augment=True, hyp=HYP)
    assert all(im is not None for im in ds.ims) and ds.cache_mode == "ram"
    assert ds.resized_bytes() == sum(im.nbytes for im in ds.ims)  # the estimate is what the cache holds
    assert any("fit in RAM: cached" in m for m in logs)
    fresh = LoadImagesAndLabels(path, img_size=96, augment=True, hyp=HYP, cache_images="disk")
    cached_sample, read_sample = ds[(1, 2)], fresh[(1, 2)]
    assert torch.equal(cached_sample[0], read_sample[0]) and torch.equal(cached_sample[1], read_sample[1])
    assert all(im is None for im in LoadImagesAndLabels(path, img_size=96).ims)  # val sets are read as they come
    monkeypatch.setattr("utils.datasets.available_ram", lambda: ds.resized_bytes() * 9)  # 10% of it is too little
    assert all(im is None for im in LoadImagesAndLabels(path, img_size=96, augment=True, hyp=HYP).ims)
