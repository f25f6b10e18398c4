"""detect.py: v6.1 detections on the raccoon val set, every source kind, output options and bad inputs."""

import json
import logging
import re
import runpy
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

import detect
from models.loading import attempt_load

from conftest import RACCOON_VAL as VAL_DIR
from conftest import ROOT, WEIGHTS

LINE = re.compile(r"^image (\d+)/40 (\S+\.jpg): (\d+)x(\d+) (?:(\d+) raccoons?, )?Done\. \(\d+\.\d{3}s\)$")


class _Lines(logging.Handler):
    """Collects the messages of the project logger."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextmanager
def captured_log():
    """Lines logged to the 'yolov5' logger while the block runs."""
    handler = _Lines()
    logger = logging.getLogger("yolov5")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def detect_run(weights, source, project, **kwargs):
    """detect.run at img 320 into project/exp; returns (save_dir, logged lines)."""
    with captured_log() as lines:
        save_dir = detect.run(weights=weights, source=source, imgsz=320, project=project, name="exp", **kwargs)
    return save_dir, lines


def read_rows(file):
    """Label rows of a detect.py txt file as an (n, 5|6) array."""
    return np.loadtxt(file, ndmin=2) if file.exists() else np.zeros((0, 6))


def copy_images(dst, n):
    """Copy the first n raccoon val images into dst; returns their paths."""
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, dst)) for p in sorted(VAL_DIR.glob("*.jpg"))[:n]]


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """One detect.py run over the 40 raccoon val images with the v6.1 reference settings."""
    if not WEIGHTS.exists() or not VAL_DIR.exists():
        pytest.skip("needs ../shared (reference checkpoint and raccoon data)")
    return detect_run(
        WEIGHTS,
        VAL_DIR,
        tmp_path_factory.mktemp("detect"),
        conf_thres=0.25,
        iou_thres=0.45,
        save_txt=True,
        save_conf=True,
    )


def test_matches_v61_reference(val_run, reference):
    """Same boxes per image as v6.1 detect.py: count, xywh and confidence within 0.002."""
    save_dir, _ = val_run
    expected = json.loads((reference / "detect_320.json").read_text())
    assert len(expected) == 40
    for stem, rows in expected.items():
        got, ref = read_rows(save_dir / "labels" / f"{stem}.txt"), np.array(rows).reshape(-1, 6)
        assert len(got) == len(ref), stem
        got, ref = got[np.argsort(got[:, 5])], ref[np.argsort(ref[:, 5])]
        np.testing.assert_allclose(got[:, :5], ref[:, :5], atol=0.002, err_msg=stem)
        np.testing.assert_allclose(got[:, 5], ref[:, 5], atol=0.002, err_msg=stem)


def test_log_lines_and_outputs(val_run):
    """One v6.1 log line per image, the speed and results lines, and an annotated copy of every image."""
    save_dir, lines = val_run
    image_lines = [m for m in map(LINE.match, lines) if m]
    assert [int(m.group(1)) for m in image_lines] == list(range(1, 41))
    for m in image_lines:
        h, w = int(m.group(3)), int(m.group(4))
        assert max(h, w) == 320 and h % 32 == 0 and w % 32 == 0
        n = int(m.group(5) or 0)
        assert n == len(read_rows(save_dir / "labels" / f"{Path(m.group(2)).stem}.txt"))
    assert any(
        re.fullmatch(
            r"Speed: [\d.]+ms pre-process, [\d.]+ms inference, [\d.]+ms NMS per image at shape "
            r"\(1, 3, 320, 320\)",
            x,
        )
        for x in lines
    )
    assert any(
        x.startswith("Results saved to")
        and str(save_dir) in x
        and x.endswith(f"{len(list(save_dir.glob('labels/*.txt')))} labels saved to {save_dir / 'labels'}")
        for x in lines
    )
    for p in VAL_DIR.glob("*.jpg"):
        out = cv2.imread(str(save_dir / p.name))
        assert out is not None and out.shape == cv2.imread(str(p)).shape


def test_single_file_and_two_value_imgsz(ref_weights, tmp_path):
    """A single image source; --img h w letterboxes to that rectangle."""
    src = copy_images(tmp_path / "src", 1)[0]
    with captured_log() as lines:
        save_dir = detect.run(weights=ref_weights, source=src, imgsz=(256, 320), project=tmp_path, save_txt=True)
    assert (save_dir / src.name).is_file()
    assert any(re.match(rf"image 1/1 {re.escape(str(src))}: \d+x\d+ ", x) for x in lines)
    assert any("at shape (1, 3, 256, 320)" in x for x in lines)
    assert read_rows(save_dir / "labels" / f"{src.stem}.txt").shape[1:] in ((5,), (0,))


def test_extreme_aspect_image_at_small_size(ref_weights, tmp_path):
    """A 10000x50 image at --img 64 letterboxes to at least one pixel per side instead of a cv2 error."""
    src = tmp_path / "tall.jpg"
    cv2.imwrite(str(src), np.full((10000, 50, 3), 200, np.uint8))
    with captured_log() as lines:
        save_dir = detect.run(weights=ref_weights, source=src, imgsz=64, project=tmp_path)
    assert (save_dir / src.name).is_file()
    assert any(re.match(r"image 1/1 .*tall.jpg: 64x32 ", x) for x in lines), lines


def test_glob_and_txt_list_sources(ref_weights, tmp_path):
    """A glob and a .txt list of (relative) paths select exactly the images they name."""
    srcs = copy_images(tmp_path / "src", 3)
    save_dir, _ = detect_run(ref_weights, str(tmp_path / "src" / f"{srcs[0].stem[:-1]}*.jpg"), tmp_path / "g")
    expected = {p.name for p in srcs if p.name.startswith(srcs[0].stem[:-1])}
    assert {p.name for p in save_dir.glob("*.jpg")} == expected
    listing = tmp_path / "src" / "list.txt"
    listing.write_text(f"{srcs[0].name}\n{srcs[2]}\n")
    save_dir, lines = detect_run(ref_weights, listing, tmp_path / "t")
    assert {p.name for p in save_dir.glob("*.jpg")} == {srcs[0].name, srcs[2].name}
    assert sum(x.startswith("image ") for x in lines) == 2


def test_video_source(ref_weights, tmp_path):
    """A short video gives an .mp4 with every frame and per-frame label files `<stem>_<frame>.txt`."""
    im = cv2.resize(cv2.imread(str(VAL_DIR / "raccoon-111.jpg")), (160, 128))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 128))
    for _ in range(3):
        writer.write(im)
    writer.release()
    save_dir, lines = detect_run(ref_weights, video, tmp_path, save_txt=True)
    assert [x.split(":")[0] for x in lines if x.startswith("video ")] == [
        f"video 1/1 ({i}/3) {video}" for i in (1, 2, 3)
    ]
    cap = cv2.VideoCapture(str(save_dir / "clip.mp4"))
    frames = []
    while (frame := cap.read())[0]:
        frames.append(frame[1])
    assert len(frames) == 3 and frames[0].shape == (128, 160, 3)
    assert sorted(p.name for p in (save_dir / "labels").glob("*.txt")) == ["clip_1.txt", "clip_2.txt", "clip_3.txt"]


def test_nosave_writes_labels_only(ref_weights, tmp_path):
    """--nosave: no images, but --save-txt labels still written."""
    src = copy_images(tmp_path / "src", 2)
    save_dir, _ = detect_run(ref_weights, tmp_path / "src", tmp_path, nosave=True, save_txt=True)
    assert not list(save_dir.glob("*.jpg"))
    assert {p.stem for p in (save_dir / "labels").glob("*.txt")} == {p.stem for p in src}


def test_save_crop(ref_weights, tmp_path):
    """--save-crop writes one crop per box under crops/<class name>/."""
    src = copy_images(tmp_path / "src", 1)[0]
    save_dir, _ = detect_run(ref_weights, src, tmp_path, save_crop=True, save_txt=True)
    n = len(read_rows(save_dir / "labels" / f"{src.stem}.txt"))
    crops = list((save_dir / "crops" / "raccoon").glob(f"{src.stem}*.jpg"))
    assert n > 0 and len(crops) == n
    assert all(cv2.imread(str(c)).size > 0 for c in crops)


def test_classes_filter(ref_weights, tmp_path):
    """--classes keeps only the listed classes (the raccoon model has class 0 only)."""
    copy_images(tmp_path / "src", 2)
    kept, _ = detect_run(ref_weights, tmp_path / "src", tmp_path / "a", classes=[0], save_txt=True)
    none, lines = detect_run(ref_weights, tmp_path / "src", tmp_path / "b", classes=[1], save_txt=True)
    assert list((kept / "labels").glob("*.txt")) and not list((none / "labels").glob("*.txt"))
    assert not any(re.search(r"\d raccoons?, Done", x) for x in lines)


@pytest.mark.parametrize(
    "option, pattern", [({}, r"raccoon \d\.\d\d"), ({"hide_conf": True}, r"raccoon"), ({"hide_labels": True}, r"None")]
)
def test_label_text(ref_weights, tmp_path, monkeypatch, option, pattern):
    """Box labels are `name conf`, `name` with --hide-conf, none with --hide-labels."""
    labels = []
    draw = detect.Annotator.box_label
    monkeypatch.setattr(
        detect.Annotator,
        "box_label",
        lambda self, box, label="", **kw: labels.append(label) or draw(self, box, label, **kw),
    )
    detect_run(ref_weights, copy_images(tmp_path / "src", 1)[0], tmp_path, **option)
    assert labels and all(re.fullmatch(pattern, str(x)) for x in labels)


def test_unreadable_image_is_skipped(ref_weights, tmp_path):
    """A corrupt image in a folder is named in a warning; the others are processed."""
    src = copy_images(tmp_path / "src", 2)
    (tmp_path / "src" / "broken.jpg").write_bytes(b"not an image")
    save_dir, lines = detect_run(ref_weights, tmp_path / "src", tmp_path)
    assert any("broken.jpg" in x and "WARNING" in x for x in lines)
    assert {p.name for p in save_dir.glob("*.jpg")} == {p.name for p in src}


def test_view_img_headless_warns(ref_weights, tmp_path):
    """--view-img on a headless OpenCV warns and still saves results."""
    src = copy_images(tmp_path / "src", 1)[0]
    save_dir, lines = detect_run(ref_weights, src, tmp_path, view_img=True)
    if detect.check_imshow():
        pytest.skip("this OpenCV can show windows")
    assert any("--view-img" in x and "WARNING" in x for x in lines)
    assert (save_dir / src.name).is_file()


def test_missing_source_and_weights(ref_weights, tmp_path):
    """Missing source or weights raise errors naming the path."""
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        detect.run(weights=ref_weights, source=tmp_path / "no_such_dir", project=tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        detect.run(weights=tmp_path / "no_such.pt", source=tmp_path, project=tmp_path)


def test_cli_missing_source_exits_cleanly(ref_weights, tmp_path, monkeypatch):
    """The command line reports a missing source in one ERROR line and exits with code 1 (no traceback)."""
    argv = [
        "detect.py",
        "--weights",
        str(ref_weights),
        "--source",
        str(tmp_path / "gone.jpg"),
        "--project",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with captured_log() as lines, pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "detect.py"), run_name="__main__")
    assert e.value.code == 1
    assert any(x.startswith("ERROR") and "gone.jpg" in x for x in lines)


def test_stream_sources_are_recognised():
    """Webcam indices and stream URLs go to LoadStreams; files, dirs and image URLs do not."""
    assert detect.is_stream("0") and detect.is_stream("rtsp://host/live") and detect.is_stream("http://h/cam")
    assert not any(map(detect.is_stream, ["a.jpg", "dir", "list.txt", "http://h/x.jpg", "http://h/v.mp4"]))


def test_fused_model_matches_unfused(ref_weights):
    """detect.load_model returns the fused model, numerically equal to the unfused one."""
    import torch

    model, stride, names = detect.load_model(ref_weights, torch.device("cpu"), half=False)
    x = torch.rand(1, 3, 128, 160)
    ref = attempt_load(ref_weights, fuse=False)(x)[0]
    assert stride == 32 and list(names) == ["raccoon"]
    torch.testing.assert_close(model(x)[0], ref, atol=1e-3, rtol=1e-3)
