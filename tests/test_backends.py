"""DetectMultiBackend: every exported format gives the .pt model's output; bad inputs give one clear line."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml

import detect
import val
from export import run as export
from models.backends import BackendError, DetectMultiBackend, model_format
from models.yolo import Model
from utils.checkpoints import save_checkpoint

from conftest import RACCOON_VAL, WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
H, W = 96, 128


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-init yolov5n (nc 2, names a/b) .pt and its static and dynamic exports in every format."""
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=2).eval()
    model.names = ["a", "b"]
    out = {}
    for kind in "static", "dynamic":
        d = tmp_path_factory.mktemp(kind)
        save_checkpoint({"epoch": -1, "model": model.half(), "ema": None}, d / "n2.pt")
        files = export(
            weights=d / "n2.pt", include=["torchscript", "onnx", "openvino"], imgsz=(H, W), dynamic=kind == "dynamic"
        )
        out[kind] = [d / "n2.pt", *files]
    return out


def relative_diff(y, ref):
    """max |y - ref| / (|ref| + 1), the project's tolerance measure."""
    return float(((y - ref).abs() / (ref.abs() + 1)).max().detach())


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_every_format_matches_pytorch(exported, kind):
    files = exported[kind]
    x = torch.rand(1, 3, H, W)
    ref = DetectMultiBackend(files[0])(x)[0]
    assert ref.shape == (1, 3 * (H * W // 64 + H * W // 256 + H * W // 1024), 7)
    for f in files[1:]:
        m = DetectMultiBackend(f)
        assert (m.stride, m.names, m.dynamic) == (32, ["a", "b"], kind == "dynamic"), f
        y, raw = m(x)
        assert raw is None and relative_diff(y, ref) < 1e-5, f


def test_dynamic_exports_take_other_sizes_and_batches(exported):
    x = torch.rand(2, 3, 64, 160)
    ref = DetectMultiBackend(exported["dynamic"][0])(x)[0]
    for f in exported["dynamic"][1:]:
        assert relative_diff(DetectMultiBackend(f)(x)[0], ref) < 1e-5, f


def test_static_export_refuses_another_size(exported):
    m = DetectMultiBackend(exported["static"][2])  # .onnx
    with pytest.raises(BackendError, match=r"exported for input \(1, 3, 96, 128\).*pass --img 96 128"):
        m(torch.rand(1, 3, 64, 64))


def test_formats():
    assert [
        model_format(f) for f in ("a.pt", "a.torchscript", "a.onnx", "a_openvino_model", "a_openvino_model/", "x/a.xml")
    ] == ["PyTorch", "TorchScript", "ONNX"] + ["OpenVINO"] * 3
    names = ("a.pth", "A.PT", "a.safetensors", "A.SafeTensors")
    assert [model_format(f) for f in names] == ["PyTorch", "PyTorch", "SafeTensors", "SafeTensors"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("model.tflite", "TFLite is not supported"),
        ("model.mlmodel", r"CoreML models run on Apple devices \(coremltools cannot run predictions elsewhere\)"),
        ("model.engine", "TensorRT needs an NVIDIA GPU"),
        (
            "model.h5",
            r"unknown model format '\.h5'; expected one of \.pt, \.safetensors, \.torchscript, \.onnx, _openvino",
        ),
    ],
)
def test_unsupported_suffixes_are_refused(name, message):
    with pytest.raises(BackendError, match=message):
        DetectMultiBackend(name)


def test_corrupt_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(BackendError, match="bad.onnx: not a readable ONNX model"):
        DetectMultiBackend(tmp_path / "bad.onnx")
    (tmp_path / "bad.torchscript").write_bytes(b"PK garbage")
    with pytest.raises(BackendError, match="bad.torchscript: not a readable TorchScript file"):
        DetectMultiBackend(tmp_path / "bad.torchscript")
    (tmp_path / "bad_openvino_model").mkdir()
    (tmp_path / "bad_openvino_model" / "bad.xml").write_text("<net>")
    with pytest.raises(BackendError, match="bad.xml: not a readable OpenVINO model"):
        DetectMultiBackend(tmp_path / "bad_openvino_model")
    with pytest.raises(FileNotFoundError, match="missing.onnx not found"):
        DetectMultiBackend(tmp_path / "missing.onnx")


def test_missing_runtime_package_names_the_pip_package(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(BackendError, match="needs the 'onnxruntime' package: pip install onnxruntime"):
        DetectMultiBackend(exported["static"][2])


def test_names_from_data_yaml_when_the_file_has_none(exported, tmp_path):
    f = tmp_path / "plain.onnx"
    model_onnx = onnx.load(str(exported["static"][2]))
    del model_onnx.metadata_props[:]
    onnx.save(model_onnx, str(f))
    assert DetectMultiBackend(f).names == ["class0", "class1"]  # class count from the output's 5 + nc columns
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"nc": 2, "names": ["cat", "dog"]}))
    assert DetectMultiBackend(f, data=str(data)).names == ["cat", "dog"]


def test_v61_style_metadata_is_read(exported, tmp_path):
    """YOLOv5 v6.1 writes metadata values with str() (a Python literal), not JSON."""
    f = tmp_path / "v61.onnx"
    model_onnx = onnx.load(str(exported["static"][2]))
    for p in model_onnx.metadata_props:
        p.value = str(json.loads(p.value))
    onnx.save(model_onnx, str(f))
    assert DetectMultiBackend(f).names == ["a", "b"]


def test_augment_needs_pytorch(exported):
    m = DetectMultiBackend(exported["dynamic"][2])
    with pytest.raises(BackendError, match="--augment and --visualize need the PyTorch .pt model"):
        m(torch.rand(1, 3, H, W), augment=True)


@pytest.mark.parametrize(
    "weights, message",
    [
        ("bad.onnx", "ERROR: .*bad.onnx: not a readable ONNX model"),
        ("model.tflite", "ERROR: model.tflite: TFLite is not supported"),
    ],
)
def test_cli_bad_weights_one_line(tmp_path, weights, message):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    shutil.copy(ROOT / "data" / "images" / "bus.jpg", tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "detect.py"),
            "--weights",
            weights,
            "--source",
            "bus.jpg",
            "--project",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = [line for line in (r.stdout + r.stderr).splitlines() if "ERROR" in line or "Traceback" in line]
    assert r.returncode == 1 and len(err) == 1, r.stdout + r.stderr
    assert re.search(message, err[0]), err


@pytest.fixture(scope="module")
def raccoon_exports(tmp_path_factory):
    """The raccoon checkpoint and its --dynamic exports (rectangular batches, as val.py feeds the .pt) at 320."""
    d = tmp_path_factory.mktemp("raccoon")
    shutil.copy(WEIGHTS, d)
    files = export(weights=d / WEIGHTS.name, include=["torchscript", "onnx", "openvino"], imgsz=320, dynamic=True)
    return [d / WEIGHTS.name, *files]


def test_val_map_of_every_format_matches_pt(raccoon_exports, raccoon_yaml, tmp_path):
    maps = []
    for f in raccoon_exports:
        (p, r, map50, map_, *_), _, _ = val.run(
            data=str(raccoon_yaml),
            weights=str(f),
            imgsz=320,
            batch_size=32,
            workers=0,
            project=tmp_path,
            name=f.name,
            plots=False,
        )
        maps.append((map50, map_))
    assert maps[0] == pytest.approx((0.948, 0.557), abs=0.001)  # v6.1's val_320.json
    for f, m in zip(raccoon_exports[1:], maps[1:]):
        assert m == pytest.approx(maps[0], abs=0.002), f


def boxes_in_pixels(save_dir):
    """{image stem: rows (cls, x1, y1, x2, y2, conf) in pixels} from detect.py --save-txt --save-conf labels."""
    out = {}
    for txt in sorted((save_dir / "labels").glob("*.txt")):
        h, w = cv2.imread(str(RACCOON_VAL / f"{txt.stem}.jpg")).shape[:2]
        rows = np.loadtxt(txt, ndmin=2)
        xy, wh = rows[:, 1:3] * (w, h), rows[:, 3:5] * (w, h)
        out[txt.stem] = np.concatenate((rows[:, :1], xy - wh / 2, xy + wh / 2, rows[:, 5:]), 1)
    return out


def test_detect_boxes_of_every_format_match_pt(raccoon_exports, tmp_path):
    source = RACCOON_VAL
    found = [
        boxes_in_pixels(
            detect.run(
                weights=f,
                source=source,
                imgsz=320,
                project=tmp_path,
                name=f.name,
                save_txt=True,
                save_conf=True,
                nosave=True,
            )
        )
        for f in raccoon_exports
    ]
    assert len(found[0]) > 30
    for f, boxes in zip(raccoon_exports[1:], found[1:]):
        assert boxes.keys() == found[0].keys(), f
        for stem, rows in boxes.items():
            ref = found[0][stem]
            assert rows.shape == ref.shape and np.abs(rows[:, 1:5] - ref[:, 1:5]).max() <= 1.0, (f, stem)


VARIANTS = sorted(p.stem.replace("yolov5_", "") for p in (ROOT / "models").glob("yolov5_*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_variant_runs_in_onnx_and_openvino(variant, tmp_path):
    h, w = 128, 160  # OpenVINO refuses a pooling window larger than the map: SCConv pools P5 by 4, so P5 >= 4x4
    torch.manual_seed(0)
    model = Model(f"yolov5n_{variant}.yaml", nc=3).eval()
    model.names = ["x", "y", "z"]
    save_checkpoint({"epoch": -1, "model": model, "ema": None}, tmp_path / f"{variant}.pt")
    files = export(weights=tmp_path / f"{variant}.pt", include=["onnx", "openvino"], imgsz=(h, w))
    assert len(files) == 2
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        ref = DetectMultiBackend(tmp_path / f"{variant}.pt")(x)[0]
    for f in files:
        assert relative_diff(DetectMultiBackend(f)(x)[0], ref) < 1e-5, f


def test_ensemble_takes_pt_files_only(exported):
    with pytest.raises(BackendError, match="an ensemble of several --weights takes .pt/.safetensors files only"):
        DetectMultiBackend([str(exported["static"][0]), str(exported["static"][2])])
    m = DetectMultiBackend([str(exported["static"][0]), str(exported["dynamic"][0])])
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        y, _ = m(x)
        single = DetectMultiBackend(exported["static"][0])(x)[0]
    assert torch.allclose(y, torch.cat([single, single], 1))  # the same weights twice: detections concatenated


def test_half_on_cpu_keeps_float32_weights_and_outputs():
    x = torch.rand(1, 3, 160, 160)
    ref = DetectMultiBackend(str(WEIGHTS))
    bf = DetectMultiBackend(str(WEIGHTS), fp16=True)
    assert bf.bf16 and not bf.fp16 and all(p.dtype == torch.float32 for p in bf.model.parameters())
    with torch.no_grad():
        want, got = ref(x)[0], bf(x)[0]
    assert got.dtype == torch.float32  # the head and the box decoding run in float32
    boxes = (got[..., :4] - want[..., :4]).abs() / (want[..., :4].abs() + 1)
    assert 0 < boxes.max() < 0.05  # bf16 trunk: close, not equal
