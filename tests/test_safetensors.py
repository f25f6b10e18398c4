""".safetensors weights: export.py writes them, every entry point reads them, bad files get one line naming them."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import detect
import export
import hubconf
import train
import val
from models.loading import attempt_load, load_checkpoint
from utils.safetensors_file import FORMAT

from conftest import WEIGHTS, captured_log, tiny_train_args


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The raccoon checkpoint copied to a temp folder and exported there: (the .pt, its .safetensors)."""
    pt = tmp_path_factory.mktemp("st") / "raccoon.pt"
    shutil.copy(WEIGHTS, pt)
    files = export.run(weights=pt, include=["safetensors"], imgsz=(64, 64))
    assert files == [pt.with_suffix(".safetensors")]
    return pt, files[0]


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_export_holds_the_fp16_state_dict_and_what_rebuilds_the_model(exported):
    pt, st = exported
    ckpt = load_checkpoint(pt)
    meta, tensors = _meta(st)
    sd = ckpt["model"].state_dict()
    assert list(tensors) == sorted(sd) and all(torch.equal(tensors[k], sd[k]) for k in sd)
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    assert meta["format"] == FORMAT and json.loads(meta["yaml"]) == ckpt["model"].yaml
    assert json.loads(meta["names"]) == ["raccoon"] and meta["nc"] == "1" and json.loads(meta["stride"]) == [8, 16, 32]
    assert json.loads(meta["epoch"]) == ckpt["epoch"] and json.loads(meta["date"]) == ckpt["date"]
    assert st.read_bytes()[8:9] == b"{"  # safetensors: an 8-byte header length, then a JSON header; no pickle


def test_float32_option(exported, tmp_path):
    pt, st = exported
    copy = shutil.copy(pt, tmp_path / "r32.pt")
    (f,) = export.run(weights=copy, include=["safetensors"], imgsz=(64, 64), float32=True)
    _, t16 = _meta(st)
    _, t32 = _meta(f)
    assert all(
        t32[k].dtype == torch.float32 and torch.equal(t32[k], t16[k].float()) for k in t16 if k.endswith("weight")
    )


@pytest.mark.parametrize("fuse", [False, True])
def test_outputs_equal_the_pt_model(exported, reference, fuse):
    pt, st = exported
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    with torch.no_grad():
        a, b = attempt_load(pt, fuse=fuse)(x)[0], attempt_load(st, fuse=fuse)(x)[0]
    assert torch.equal(a, b)


def test_loaded_checkpoint_fields(exported):
    ckpt = load_checkpoint(exported[1])
    assert ckpt["ema"] is None and ckpt["epoch"] == -1 and isinstance(ckpt["date"], str)
    assert ckpt["model"].names == ["raccoon"] and ckpt["model"].stride.tolist() == [8, 16, 32]


def _rewrite(src, dst, meta=None, drop=(), drop_meta=()):
    """src's tensors and metadata written to dst, with meta's entries replaced and the drop keys left out."""
    metadata, tensors = _meta(src)
    metadata = {k: v for k, v in {**metadata, **(meta or {})}.items() if k not in drop_meta}
    save_file({k: v for k, v in tensors.items() if k not in drop}, str(dst), metadata=metadata)


def _bad_yaml(src):
    y = json.loads(_meta(src)[0]["yaml"])
    y["backbone"][1][2] = "NoSuchBlock"
    return json.dumps(y)


BAD = {
    "no_metadata": (lambda src, dst: save_file({"w": torch.zeros(2)}, str(dst)), "metadata 'format'"),
    "no_yaml": (lambda src, dst: _rewrite(src, dst, drop_meta=("yaml",)), "'yaml' is missing"),
    "yaml_not_json": (lambda src, dst: _rewrite(src, dst, {"yaml": "{nc: 1"}), "'yaml' is not valid JSON"),
    "unknown_module": (lambda src, dst: _rewrite(src, dst, {"yaml": _bad_yaml(src)}), "unknown module 'NoSuchBlock'"),
    "names_not_list": (lambda src, dst: _rewrite(src, dst, {"names": '"raccoon"'}), "metadata 'names'"),
    "nc_mismatch": (lambda src, dst: _rewrite(src, dst, {"names": '["a", "b"]'}), "2 names for nc=1"),
    "tensor_missing": (lambda src, dst: _rewrite(src, dst, drop=("model.24.anchors",)), "model.24.anchors missing"),
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:5000]), "not a readable .safetensors"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_is_one_line_naming_it(exported, tmp_path, case):
    make, expected = BAD[case]
    bad = tmp_path / f"{case}.safetensors"
    make(exported[1], bad)
    for load in (load_checkpoint, attempt_load):
        with pytest.raises(ValueError) as e:
            load(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value) and expected in str(e.value), str(e.value)


def test_detect_val_hub_and_export_take_it(exported, tmp_path, raccoon_val_copy, raccoon_yaml):
    """Same detections from detect.py, same metrics from val.py (40 images at 128), same boxes from the hub model;
    export.py converts it, but never over itself."""
    pt, st = exported
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(raccoon_val_copy.glob("*.jpg"))[:2]:
        shutil.copy(p, images)
    rows = {}
    for w in (pt, st):
        d = detect.run(
            weights=w, source=images, imgsz=320, project=tmp_path, name=w.suffix, save_txt=True, save_conf=True
        )
        rows[w.suffix] = {p.name: p.read_text() for p in sorted((d / "labels").glob("*.txt"))}
    assert rows[".pt"] and rows[".pt"] == rows[".safetensors"]
    metrics = [val.run(data=raccoon_yaml, weights=w, imgsz=128, plots=False, project=tmp_path)[0] for w in (pt, st)]
    assert metrics[0][3] > 0.1 and metrics[0] == metrics[1]
    hub = [hubconf.custom(str(w), device="cpu") for w in (pt, st)]
    im = str(sorted(images.glob("*.jpg"))[0])
    assert torch.equal(hub[0](im).xyxy[0], hub[1](im).xyxy[0])
    (ts,) = export.run(weights=st, include=["torchscript"], imgsz=(64, 64))
    assert ts == st.with_suffix(".torchscript") and ts.stat().st_size > 0
    assert export.run(weights=st, include=["safetensors"], imgsz=(64, 64)) == []  # it would overwrite its input


def test_train_transfers_from_it_into_a_variant(exported, tiny_data, tmp_path):
    counts = {}
    for w in exported:
        opt = train.parse_opt(tiny_train_args(tiny_data, tmp_path, name=w.suffix, cfg="yolov5n_SE.yaml"))
        opt.weights = str(w)
        opt = train.check_options(opt)
        with captured_log() as lines:
            train.Trainer(opt.hyp, opt, torch.device("cpu")).build_model()
        counts[w.suffix] = [ln.split(" from ")[0] for ln in lines if ln.startswith("Transferred")]
    assert counts[".pt"] and counts[".pt"] == counts[".safetensors"], counts


def test_train_save_safetensors_writes_best_beside_best_pt(tiny_data, tmp_path):
    train.main(train.parse_opt(tiny_train_args(tiny_data, tmp_path, "--epochs", "1", "--save-safetensors")))
    w = tmp_path / "exp" / "weights"
    assert (w / "best.safetensors").is_file() and not (w / "last.safetensors").exists()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(attempt_load(w / "best.pt")(x)[0], attempt_load(w / "best.safetensors")(x)[0])


@pytest.mark.slow
def test_val_map_equals_the_pt_reference(exported, tmp_path, raccoon_yaml, reference):
    ref = json.loads((reference / "val_320.json").read_text())
    (p, r, map50, map_, *_), _, _ = val.run(data=raccoon_yaml, weights=exported[1], imgsz=320, project=tmp_path)
    assert abs(map50 - ref["map50"]) < 1e-3 and abs(map_ - ref["map"]) < 1e-3
