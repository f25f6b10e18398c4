"""detect.py --heatmap and benchmarks/heatmaps.py: where the heat lies, its size, the letterbox mapping, bad input."""

import filecmp
import runpy
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from benchmarks import heatmaps as grids
from export import run as export
from models.backends import DetectMultiBackend
from models.yolo import Detect, Model
from utils.augmentations import letterbox
from utils.checkpoints import save_checkpoint
from utils.eigencam import principal_projection
from utils.heatmaps import HeatmapError, Heatmaps, PaddingFill, content_box
from utils.sources import to_chw_rgb

from conftest import RACCOON_VAL, ROOT, WEIGHTS, captured_log

SIZES = [(97, 131), (333, 125), (64, 301)]  # odd and rectangular (h, w) source images


def labelled_mask(image, shape):
    """Boolean (h, w) mask of the labelled boxes of a raccoon val image (YOLO labels beside images/)."""
    h, w = shape
    rows = np.loadtxt(str(image).replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt", ndmin=2)
    mask = np.zeros(shape, bool)
    for _, xc, yc, bw, bh in rows:
        mask[int((yc - bh / 2) * h) : int((yc + bh / 2) * h), int((xc - bw / 2) * w) : int((xc + bw / 2) * w)] = True
    return mask


def odd_images(folder):
    """Raccoon images resized to SIZES, written to folder; returns {stem: (h, w)}."""
    folder.mkdir(parents=True, exist_ok=True)
    im = cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[0]))
    sizes = {}
    for h, w in SIZES:
        cv2.imwrite(str(folder / f"odd_{h}x{w}.png"), cv2.resize(im, (w, h)))
        sizes[f"odd_{h}x{w}"] = (h, w)
    return sizes


def tensor(im0, size, stride=32, auto=True):
    """The letterboxed float NCHW input detect.py makes of a BGR image."""
    return torch.from_numpy(to_chw_rgb(letterbox(im0, size, stride=stride, auto=auto)[0]))[None].float() / 255


@pytest.fixture(scope="module")
def backend():
    """The raccoon checkpoint, loaded once for the module."""
    return DetectMultiBackend(WEIGHTS)


@pytest.fixture(scope="module")
def se_weights(tmp_path_factory):
    """A random-init yolov5n_SE (an attention block at the end of the backbone) .pt, and the SE layer index."""
    torch.manual_seed(0)
    model = Model("yolov5n_SE.yaml", nc=1).eval()
    model.names = ["raccoon"]
    path = tmp_path_factory.mktemp("se") / "yolov5n_SE.pt"
    save_checkpoint({"epoch": -1, "model": model, "ema": None}, path)
    return path, next(m.i for m in model.model if m.type.endswith("SE"))


@pytest.fixture(scope="module")
def raccoon_run(tmp_path_factory):
    """detect.py --heatmap at 640 on the first 10 raccoon val images (the issue's check)."""
    source = tmp_path_factory.mktemp("src")
    for p in sorted(RACCOON_VAL.glob("*.jpg"))[:10]:
        shutil.copy(p, source)
    project = tmp_path_factory.mktemp("detect")
    save_dir = detect.run(weights=WEIGHTS, source=source, project=project, heatmap=True)
    return source, save_dir


def test_raccoon_heat_lies_in_the_labelled_boxes(raccoon_run):
    """A .jpg and a .npy per image at the image's size, heat in [0, 1]; hotter inside the boxes on >= 8 of 10."""
    source, save_dir = raccoon_run
    hotter = 0
    for image in sorted(source.glob("*.jpg")):
        shape = cv2.imread(str(image)).shape
        heat = np.load(save_dir / "heatmaps" / f"{image.stem}.npy")
        assert heat.shape == shape[:2] and heat.dtype == np.float32
        assert heat.min() == 0 and heat.max() == 1
        assert cv2.imread(str(save_dir / "heatmaps" / image.name)).shape == shape
        mask = labelled_mask(RACCOON_VAL / image.name, shape[:2])
        hotter += heat[mask].mean() > heat[~mask].mean()
    assert hotter >= 8


def test_heatmap_off_changes_nothing(raccoon_run, tmp_path):
    """Without --heatmap the run writes the same files, byte for byte, and no heatmaps folder."""
    source, with_heat = raccoon_run
    without = detect.run(weights=WEIGHTS, source=source, project=tmp_path)
    assert not (without / "heatmaps").exists()
    names = sorted(p.name for p in without.iterdir())
    assert names == sorted(p.name for p in with_heat.iterdir() if p.name != "heatmaps")
    assert filecmp.cmpfiles(without, with_heat, names, shallow=False)[0] == names


def test_sizes_of_odd_rectangular_images_and_video_frames(tmp_path):
    """Heat and picture have each source's own size, for odd/rectangular images and for every video frame."""
    sizes = odd_images(tmp_path / "src")
    save_dir = detect.run(weights=WEIGHTS, source=tmp_path / "src", imgsz=160, project=tmp_path, heatmap=True)
    for stem, hw in sizes.items():
        assert np.load(save_dir / "heatmaps" / f"{stem}.npy").shape == hw
        assert cv2.imread(str(save_dir / "heatmaps" / f"{stem}.jpg")).shape[:2] == hw
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (150, 90))
    for _ in range(2):
        writer.write(cv2.resize(cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[1])), (150, 90)))
    writer.release()
    save_dir = detect.run(weights=WEIGHTS, source=video, imgsz=160, project=tmp_path, heatmap=True)
    assert sorted(p.name for p in (save_dir / "heatmaps").glob("*.npy")) == ["clip_1.npy", "clip_2.npy"]
    assert np.load(save_dir / "heatmaps" / "clip_2.npy").shape == (90, 150)


@pytest.mark.parametrize("hw", [(97, 131), (333, 125), (480, 640), (64, 301)])
@pytest.mark.parametrize("size,auto", [(160, True), (320, False), ((256, 320), False)])
def test_content_box_is_where_letterbox_puts_the_image(hw, size, auto):
    """content_box finds exactly the non-padding pixels of letterbox()'s output."""
    out = letterbox(np.full((*hw, 3), 255, np.uint8), size, auto=auto)[0]
    rows, cols = np.nonzero(out[..., 0] > 200)
    top, left, h, w = content_box(out.shape[:2], hw)
    assert (top, left, h, w) == (rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)


def test_padding_does_not_steer_eigencam():
    """Cells filled by PaddingFill leave the content's principal projection exactly as without them."""
    torch.manual_seed(0)
    content = torch.rand(1, 8, 5, 7) * torch.linspace(0, 3, 7)  # a 5 x 7 cell image with structure along x
    padded = torch.full((1, 8, 10, 7), 50.0)  # rows 0-2 and 8-9 padding (extreme values), rows 3-7 content
    padded[:, :, 3:8] = content
    filled = PaddingFill((80, 56), [(24, 0, 40, 56)])(padded)  # stride 8: content pixels 24-63 = rows 3-7
    assert torch.equal(filled[0, :, 3:8], content[0])
    proj = principal_projection(filled[0].numpy())
    np.testing.assert_allclose(proj[3:8], principal_projection(content[0].numpy()), atol=1e-5)
    assert proj[3:8].min() <= proj[0, 0] <= proj[3:8].max()


def test_two_models_differ_and_one_repeats(backend, se_weights):
    """Another model gives another map of the same image; the same model gives the same map twice."""
    im0 = cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[3]))
    x = tensor(im0, 320)
    raccoon = Heatmaps(backend).compute(x, [im0.shape[:2]])[0]
    assert np.array_equal(raccoon, Heatmaps(backend).compute(x, [im0.shape[:2]])[0])
    se = Heatmaps(DetectMultiBackend(se_weights[0])).compute(x, [im0.shape[:2]])[0]
    assert se.shape == raccoon.shape == im0.shape[:2]
    assert np.abs(se - raccoon).mean() > 0.1


def test_batch_of_differently_padded_images(backend):
    """A batch (as LoadStreams makes: fixed size, each image its own padding) maps each image to its own size."""
    ims = [cv2.resize(cv2.imread(str(p)), (w, h)) for p, (h, w) in zip(sorted(RACCOON_VAL.glob("*.jpg")), SIZES)]
    x = torch.cat([tensor(im, 256, auto=False) for im in ims])
    heats = Heatmaps(backend).compute(x, [im.shape[:2] for im in ims])
    alone = [Heatmaps(backend).compute(x[i : i + 1], [im.shape[:2]])[0] for i, im in enumerate(ims)]
    for heat, one, im in zip(heats, alone, ims):
        assert heat.shape == im.shape[:2] and heat.min() == 0 and heat.max() == 1
        np.testing.assert_allclose(heat, one, atol=1e-3)


def test_gradient_method_on_an_attention_layer_leaves_the_model_as_it_was(se_weights):
    """GradCAM on the SE block's output runs under no_grad (as in detect.py); no hook or setting is left behind."""
    weights, se_layer = se_weights
    model = DetectMultiBackend(weights)
    im0 = cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[0]))
    with torch.no_grad():
        heat = Heatmaps(model, [se_layer], "gradcam").compute(tensor(im0, 160), [im0.shape[:2]])[0]
    assert heat.shape == im0.shape[:2] and heat.min() == 0 and heat.max() == 1
    assert not any(m._forward_hooks for m in model.modules())
    assert all(m.inplace for m in model.modules() if isinstance(m, Detect))


def test_half_on_cpu_is_close_to_float32():
    """--half on CPU (bfloat16 autocast) gives nearly the FP32 map."""
    im0 = cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[1]))
    x = tensor(im0, 320)
    full = Heatmaps(DetectMultiBackend(WEIGHTS)).compute(x, [im0.shape[:2]])[0]
    half = Heatmaps(DetectMultiBackend(WEIGHTS, fp16=True)).compute(x, [im0.shape[:2]])[0]
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.95


@pytest.mark.cuda
def test_fp16_on_cuda_is_close_to_float32():
    """--half on CUDA (an FP16 model) gives nearly the FP32 map."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    im0 = cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[1]))
    x = tensor(im0, 640).cuda()
    full = Heatmaps(DetectMultiBackend(WEIGHTS, device="cuda:0")).compute(x, [im0.shape[:2]])[0]
    half = Heatmaps(DetectMultiBackend(WEIGHTS, device="cuda:0", fp16=True)).compute(x.half(), [im0.shape[:2]])
    assert np.corrcoef(full.ravel(), half[0].ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"layers": [99]}, "--heatmap-layer 99: no such feature layer; this model has layers 0-23"),
        ({"layers": [24]}, "--heatmap-layer 24: .*layer 24 is Detect"),
        ({"method": "NoSuchCAM"}, "--heatmap-method NoSuchCAM: not a CAM method of the grad-cam library"),
        ({"method": "ScoreCAM"}, "--heatmap-method ScoreCAM: grad-cam has it, but .*minutes per image"),
    ],
)
def test_bad_layer_and_method(backend, kwargs, message):
    with pytest.raises(HeatmapError, match=message):
        Heatmaps(backend, **kwargs)


def test_exported_model_is_refused_in_one_line(tmp_path, monkeypatch):
    """An exported (TorchScript) model: detect.py --heatmap exits 1 with one ERROR line naming the file and why."""
    torch.manual_seed(0)
    save_checkpoint({"epoch": -1, "model": Model("yolov5n.yaml", nc=1).eval(), "ema": None}, tmp_path / "n.pt")
    (ts,) = export(weights=tmp_path / "n.pt", include=["torchscript"], imgsz=(64, 64))
    argv = ["detect.py", "--weights", str(ts), "--source", str(RACCOON_VAL), "--heatmap", "--project", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with captured_log() as lines, pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "detect.py"), run_name="__main__")
    errors = [x for x in lines if x.startswith("ERROR")]
    assert e.value.code == 1 and len(errors) == 1 and "\n" not in errors[0]
    assert "--heatmap needs a PyTorch .pt model" in errors[0] and "n.torchscript is TorchScript" in errors[0]


def test_benchmark_grid_of_two_models(se_weights, tmp_path):
    """One grid per image: two titled columns of the image's aspect, side by side, over the colour bar."""
    sizes = odd_images(tmp_path / "src")
    weights = [str(WEIGHTS), str(se_weights[0])]
    argv = ["--weights", *weights, "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--img", "160"]
    assert grids.main([*argv, "--height", "120"]) == 0
    for stem, (h, w) in sizes.items():
        grid = cv2.imread(str(tmp_path / "out" / f"{stem}.jpg"))
        col = max(round(w * 120 / h), 1)
        assert grid.shape == (grids.TITLE_H + 120 + grids.BAR_H, 2 * col + 2, 3)
        left, right = grid[grids.TITLE_H : grids.TITLE_H + 120, :col], grid[grids.TITLE_H : grids.TITLE_H + 120, -col:]
        assert np.abs(left.astype(int) - right).mean() > 5
    model = DetectMultiBackend(se_weights[0])
    assert grids.model_title(model, se_weights[0]) == "yolov5n_SE | yolov5n_SE.pt"


def test_benchmark_bad_weights_in_one_line(tmp_path):
    bad = Path(tmp_path / "model.onnx")
    bad.write_bytes(b"not a model")
    with captured_log() as lines:
        code = grids.main(["--weights", str(bad), "--source", str(RACCOON_VAL), "--out", str(tmp_path / "o")])
    assert code == 1 and len([x for x in lines if x.startswith("ERROR")]) == 1


VARIANTS = sorted(p.stem.replace("yolov5_", "") for p in (ROOT / "models").glob("yolov5_*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_attention_variant_on_its_block_and_detect_layers(variant, tmp_path):
    """Each zoo variant (random init, n scale) gives an image-sized [0, 1] map from Detect's layers and its block."""
    torch.manual_seed(0)
    model = Model(f"yolov5n_{variant}.yaml", nc=1).eval()
    block = next(m.i for m in model.model if m.type.startswith("models.attention."))
    save_checkpoint({"epoch": -1, "model": model, "ema": None}, tmp_path / "m.pt")
    backend = DetectMultiBackend(tmp_path / "m.pt")
    im0 = cv2.resize(cv2.imread(str(sorted(RACCOON_VAL.glob("*.jpg"))[0])), (150, 100))
    for layers in None, [block]:
        with torch.no_grad():
            heat = Heatmaps(backend, layers).compute(tensor(im0, 128), [im0.shape[:2]])[0]
        assert heat.shape == (100, 150) and heat.min() == 0 and heat.max() == 1
