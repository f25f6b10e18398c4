"""export.py: ONNX and TorchScript files that reproduce the PyTorch model, with v6.1's names and metadata."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from export import has_xnnpack, parse_opt, run
from models.loading import attempt_load
from models.yolo import Model
from utils.checkpoints import save_checkpoint

from conftest import captured_log

H, W = 128, 160  # export size: a multiple of the stride, not square
TOL = 1e-4


@pytest.fixture(scope="module")
def n2_weights(tmp_path_factory):
    """A random-init yolov5n (nc=2, eval) checkpoint saved the way train.py does (FP16 model)."""
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=2).eval()
    path = tmp_path_factory.mktemp("n2") / "yolov5n.pt"
    save_checkpoint({"epoch": -1, "model": model.half(), "ema": None}, path)
    return path


def normalised(y, h, w):
    """Decoded output with box pixels divided by the image size, so one tolerance fits every column."""
    y = np.array(y, dtype=np.float64)
    y[..., [0, 2]] /= w
    y[..., [1, 3]] /= h
    return y


def onnx_predict(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})


def torch_predict(weights, x):
    with torch.no_grad():
        return attempt_load(weights)(x)[0].numpy()


def onnx_metadata(path):
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


def test_onnx_static_matches_pytorch(n2_weights):
    files = run(weights=n2_weights, include=["onnx"], imgsz=(H, W))
    assert files == [n2_weights.with_suffix(".onnx")]
    graph = onnx.load(str(files[0])).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["output"]
    x = torch.rand(1, 3, H, W)
    (y,) = onnx_predict(files[0], x)
    n_anchors = 3 * (H * W // 8**2 + H * W // 16**2 + H * W // 32**2)
    assert y.shape == (1, n_anchors, 7)
    np.testing.assert_allclose(normalised(y, H, W), normalised(torch_predict(n2_weights, x), H, W), atol=TOL)


def test_onnx_dynamic_inplace_runs_other_batch_and_size(n2_weights):
    (f,) = run(weights=n2_weights, include=["onnx"], imgsz=(H, W), dynamic=True, inplace=True)
    for shape in [(2, 3, H, W), (1, 3, 64, 96)]:
        x = torch.rand(*shape)
        (y,) = onnx_predict(f, x)
        h, w = shape[2:]
        np.testing.assert_allclose(normalised(y, h, w), normalised(torch_predict(n2_weights, x), h, w), atol=TOL)


def test_onnx_train_mode_exports_raw_maps(n2_weights):
    (f,) = run(weights=n2_weights, include=["onnx"], imgsz=(H, W), train=True)
    assert [o.name for o in onnx.load(str(f)).graph.output] == ["output", "output1", "output2"]
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        expected = attempt_load(n2_weights).train()(x)
    for y, e in zip(onnx_predict(f, x), expected):
        assert y.shape == (1, 3, e.shape[2], e.shape[3], 7)
        np.testing.assert_allclose(y, e.numpy(), atol=TOL)


def test_onnx_reference_checkpoint_metadata_and_outputs(ref_weights, reference, tmp_path):
    weights = tmp_path / ref_weights.name
    shutil.copy(ref_weights, weights)
    (f,) = run(weights=weights, include=["onnx"], imgsz=320)
    assert onnx_metadata(f) == {"stride": 32, "names": ["raccoon"]}
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    (y,) = onnx_predict(f, x)
    expected = np.load(reference / "bus_output_320.npy")  # v6.1's own (unfused) output on the same input
    np.testing.assert_allclose(normalised(y, 320, 320), normalised(expected, 320, 320), atol=TOL)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip(n2_weights):
    (f,) = run(weights=n2_weights, include=["torchscript"], imgsz=(H, W))
    assert f == n2_weights.with_suffix(".torchscript")
    extra = {"config.txt": ""}
    ts = torch.jit.load(str(f), _extra_files=extra)
    assert json.loads(extra["config.txt"]) == {"shape": [1, 3, H, W], "stride": 32, "names": ["0", "1"]}
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        y = ts(x)[0].numpy()
    np.testing.assert_allclose(normalised(y, H, W), normalised(torch_predict(n2_weights, x), H, W), atol=TOL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"include": ["tflite"]}, "--include tflite is not available: TensorFlow formats are not supported"),
        ({"include": ["saved_model"]}, "--include saved_model is not available: TensorFlow formats"),
        ({"include": ["onnx", "paddle"]}, "invalid --include paddle"),
        ({"train": True, "include": ["openvino"]}, "--train exports raw per-level maps: only torchscript and onnx"),
        ({"half": True, "device": "cpu"}, "--half only compatible with GPU export"),
        ({"cfg": "yolov5n.yaml"}, "exactly one of --weights"),
        ({"imgsz": (64, 64, 64)}, "--img takes one or two"),
    ],
)
def test_bad_options_give_clear_errors(n2_weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(**{"weights": n2_weights, **kwargs})


def test_cfg_attention_variant_exports_to_onnx(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    (f,) = run(cfg="yolov5n_SE.yaml", include=["onnx"], imgsz=(H, W))
    assert f == tmp_path / "yolov5n_SE.onnx"
    assert onnx_metadata(f)["names"] == [str(i) for i in range(80)]
    torch.manual_seed(1)  # the same random init as inside run()
    model = Model("yolov5n_SE.yaml").fuse().eval()
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    (y,) = onnx_predict(f, x)
    np.testing.assert_allclose(normalised(y, H, W), normalised(expected, H, W), atol=TOL)


def test_v61_defaults_and_closing_hints(n2_weights):
    opt = parse_opt(["--weights", str(n2_weights)])
    assert (opt.include, opt.opset, opt.imgsz, opt.dynamic, opt.simplify) == (
        ["torchscript", "onnx"],
        12,
        [640, 640],
        False,
        False,
    )
    with captured_log() as lines:
        files = run(weights=n2_weights, imgsz=(H, W))
    assert files == [n2_weights.with_suffix(".torchscript"), n2_weights.with_suffix(".onnx")]
    assert onnx.load(str(files[1])).opset_import[0].version == 12
    text = "\n".join(lines)
    for hint in (
        f"Detect:          python detect.py --weights {files[-1]}",
        f"Validate:        python val.py --weights {files[-1]}",
        f"', 'custom', '{files[-1]}', source='local')",
    ):
        assert hint in text


def test_simplify_keeps_outputs(n2_weights, tmp_path):
    weights = tmp_path / "s.pt"
    shutil.copy(n2_weights, weights)
    (plain,) = run(weights=n2_weights, include=["onnx"], imgsz=(H, W))
    n_plain = len(onnx.load(str(plain)).graph.node)
    (f,) = run(weights=weights, include=["onnx"], imgsz=(H, W), simplify=True)
    assert len(onnx.load(str(f)).graph.node) < n_plain
    assert onnx_metadata(f) == {"stride": 32, "names": ["0", "1"]}
    x = torch.rand(1, 3, H, W)
    np.testing.assert_allclose(
        normalised(onnx_predict(f, x)[0], H, W), normalised(torch_predict(n2_weights, x), H, W), atol=TOL
    )


def test_openvino_folder_with_metadata(n2_weights, tmp_path):
    weights = tmp_path / "ov.pt"
    shutil.copy(n2_weights, weights)
    (f,) = run(weights=weights, include=["openvino"], imgsz=(H, W))
    assert f == tmp_path / "ov_openvino_model" and (f / "ov.xml").is_file() and (f / "ov.bin").is_file()
    assert yaml.safe_load((f / "metadata.yaml").read_text()) == {"stride": 32, "names": ["0", "1"]}
    assert (tmp_path / "ov.onnx").is_file()  # OpenVINO is converted from the ONNX export, kept as in v6.1


def test_optimize_is_mobile_torchscript_or_a_clear_refusal(n2_weights):
    if not has_xnnpack():
        with pytest.raises(ValueError, match="--optimize needs a torch build with XNNPACK"):
            run(weights=n2_weights, include=["torchscript"], imgsz=(H, W), optimize=True)
        return
    (f,) = run(weights=n2_weights, include=["torchscript"], imgsz=(H, W), optimize=True)
    x = torch.rand(1, 3, H, W)
    np.testing.assert_allclose(
        normalised(torch.jit.load(str(f))(x)[0].numpy(), H, W), normalised(torch_predict(n2_weights, x), H, W), atol=TOL
    )


@pytest.mark.slow
def test_int8_openvino_is_quantized_and_runs(n2_weights, tiny_data, tmp_path):
    from models.backends import DetectMultiBackend

    weights = tmp_path / "q.pt"
    shutil.copy(n2_weights, weights)
    (f,) = run(weights=weights, include=["openvino"], imgsz=(H, W), int8=True, data=tiny_data)
    assert f == tmp_path / "q_int8_openvino_model"
    assert "FakeQuantize" in (f / "q.xml").read_text()  # activations and weights pass through INT8 quantizers
    x = torch.rand(1, 3, H, W)
    y, _ = DetectMultiBackend(f)(x)
    assert y.shape == (1, 3 * (H * W // 64 + H * W // 256 + H * W // 1024), 7) and torch.isfinite(y).all()


def test_int8_needs_openvino(n2_weights):
    with pytest.raises(ValueError, match="--int8 quantizes the OpenVINO export: add --include openvino"):
        run(weights=n2_weights, include=["onnx"], int8=True)


def test_coreml_model_with_image_input_and_metadata(n2_weights, tmp_path):
    ct = pytest.importorskip("coremltools")
    from models.backends import BackendError, DetectMultiBackend

    weights = tmp_path / "c.pt"
    shutil.copy(n2_weights, weights)
    (f,) = run(weights=weights, include=["coreml"], imgsz=(H, W))
    assert f == tmp_path / "c.mlmodel"
    spec = ct.models.MLModel(str(f), skip_model_load=True).get_spec()
    (inp,) = spec.description.input
    assert (inp.name, inp.type.imageType.height, inp.type.imageType.width) == ("image", H, W)
    meta = spec.description.metadata.userDefined
    assert (json.loads(meta["stride"]), json.loads(meta["names"])) == (32, ["0", "1"])
    assert spec.neuralNetwork.preprocessing[0].scaler.channelScale == pytest.approx(1 / 255)
    with pytest.raises(BackendError, match="CoreML models run on Apple devices"):
        DetectMultiBackend(f)


def test_opset_raised_to_what_the_blocks_need(tmp_path, monkeypatch):
    """DeformableAttention's grid_sample needs opset 16: export.py raises the default 12 and says so in one line."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    with captured_log() as lines:
        (f,) = run(cfg="yolov5n_DeformableAttention.yaml", include=["onnx"], imgsz=(64, 96))
    assert any("opset 12 raised to 16, the lowest that DeformableAttention needs" in ln for ln in lines)
    assert onnx.load(str(f)).opset_import[0].version == 16
    torch.manual_seed(1)
    model = Model("yolov5n_DeformableAttention.yaml").fuse().eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    (y,) = onnx_predict(f, x)
    np.testing.assert_allclose(normalised(y, 64, 96), normalised(expected, 64, 96), atol=TOL)
    with captured_log() as lines:
        run(cfg="yolov5n_SE.yaml", include=["onnx"], imgsz=(64, 96))
    assert not any("opset 12 raised" in ln for ln in lines)  # blocks that need nothing more stay at the default
