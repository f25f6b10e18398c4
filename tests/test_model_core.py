"""Model core: v6.1 summaries and state_dicts, checkpoint equivalence, safe loading, yaml errors."""

import json
import os
import pickle
import subprocess
import sys
from functools import cache

import numpy as np
import pytest
import torch

from models.config import ModelConfigError
from models.loading import attempt_load, load_checkpoint
from models.yolo import Model
from utils.checkpoints import UnsafeCheckpointError, save_checkpoint

from conftest import ROOT, SHARED, captured_log

REF_MODELS = SHARED / "reference" / "yolov5_v6.1_models.json"
SIZES = ["yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"]


@cache
def built(name):
    """(model, log lines) for a v6.1 size, built once per session."""
    with captured_log() as lines:
        model = Model(f"{name}.yaml")
    return model, tuple(lines)


@pytest.fixture(scope="module")
def ref_models():
    return json.loads(REF_MODELS.read_text())


@pytest.mark.parametrize("name", SIZES)
def test_summary_and_layer_table_equal_v61(name, ref_models):
    ref = ref_models[name]
    _, lines = built(name)
    rows = [ln for ln in lines if ln[:3].strip().isdigit()]
    assert rows == ref["layer_table"]
    summary = [ln for ln in lines if ln.startswith("Model Summary")]
    assert summary == [ref["summary"]]
    exact = [ln for ln in lines if ln.startswith("Exact:")]
    assert len(exact) == 1 and "GFLOPs at 640x640" in exact[0]


@pytest.mark.parametrize("name", SIZES)
def test_state_dict_keys_and_shapes_equal_v61(name, ref_models):
    model, _ = built(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref_models[name]["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref_models[name]["n_params"]
    assert model.stride.tolist() == ref_models[name]["stride"]


def rel_err(y, ref):
    """Largest |y - ref| relative to |ref| + 1 (float32 reductions round differently on another CPU)."""
    return float((np.abs(y - ref) / (np.abs(ref) + 1)).max())


def test_reference_checkpoint_output_matches(ref_weights, reference):
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    ref = np.load(reference / "bus_output_320.npy")
    model = attempt_load(ref_weights, fuse=False)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        y = model(x)[0].numpy()
    assert y.shape == ref.shape and rel_err(y, ref) <= 1e-5


def test_fused_checkpoint_output_close(ref_weights, reference):
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    ref = np.load(reference / "bus_output_320.npy")
    model = attempt_load(ref_weights, fuse=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        y = model(x)[0].numpy()
    assert rel_err(y, ref) <= 1e-4  # BatchNorm folded into the conv weights rounds differently


def test_ensemble_concatenates_detections(ref_weights, reference):
    x = torch.from_numpy(np.load(reference / "bus_input_320.npy"))
    ens = attempt_load([str(ref_weights), str(ref_weights)], fuse=False)
    with torch.no_grad():
        y, _ = ens(x)
    assert y.shape == (1, 12600, 6) and ens.names == ["raccoon"]


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_hostile_pickle_refused_and_not_run(tmp_path, fmt):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    payload = {"model": _Hostile(marker)}
    if fmt == "torch":
        torch.save(payload, bad)
    else:
        bad.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafeCheckpointError) as e:
        attempt_load(bad)
    assert "system" in str(e.value) and str(bad) in str(e.value)
    assert not marker.exists()


def test_missing_truncated_and_foreign_files(tmp_path, ref_weights):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(ref_weights.read_bytes()[:50000])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a YOLOv5 checkpoint"):
        load_checkpoint(foreign)


def test_own_checkpoint_round_trip_is_atomic(tmp_path):
    model = Model("yolov5n.yaml", nc=2)
    path = tmp_path / "w" / "last.pt"
    save_checkpoint({"epoch": 3, "model": model.half(), "ema": None}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    loaded = attempt_load(path, fuse=False)
    assert loaded.model[-1].nc == 2 and next(loaded.parameters()).dtype == torch.float32


def _write_yaml(tmp_path, text, name="bad.yaml"):
    base = (ROOT / "models" / "yolov5n.yaml").read_text()
    path = tmp_path / name
    path.write_text(text(base))
    return path


BAD_YAMLS = {
    "unknown module": (lambda b: b.replace("SPPF, [1024, 5]", "SPPFF, [1024, 5]"), "layer 9 SPPFF.*unknown module"),
    "wrong arg count": (
        lambda b: b.replace("Conv, [128, 3, 2]]", "Conv, [128, 3, 2, 1, 1, 1, 1]]"),
        "layer 1 Conv.*wrong number of arguments",
    ),
    "wrong arg type": (lambda b: b.replace("Conv, [128, 3, 2]]", "Conv, ['wide', 3, 2]]"), "layer 1 Conv.*c2"),
    "from out of range": (
        lambda b: b.replace("[[-1, 6], 1, Concat", "[[-1, 30], 1, Concat"),
        "layer 12 Concat.*'from' index 30 out of range",
    ),
    "missing head": (lambda b: b.split("# head")[0], "missing required key.*head"),
    "missing nc": (lambda b: b.replace("nc: 80", ""), "missing required key.*nc"),
    "malformed anchors": (lambda b: b.replace("[10,13, 16,30, 33,23]", "[10,13, 16,30, 33]"), "malformed anchors"),
    "bad pool kernel": (lambda b: b.replace("SPPF, [1024, 5]", "SPPF, [1024, 512]"), "layer 9 SPPF.*odd"),
}


@pytest.mark.parametrize("case", list(BAD_YAMLS))
def test_bad_yaml_gives_one_clear_line(tmp_path, case):
    edit, pattern = BAD_YAMLS[case]
    path = _write_yaml(tmp_path, edit)
    with pytest.raises(ModelConfigError, match=pattern) as e:
        Model(path)
    assert str(e.value).startswith("bad.yaml") and "\n" not in str(e.value)


def test_shape_error_names_layer(tmp_path):
    path = _write_yaml(tmp_path, lambda b: b.replace("[[-1, 6], 1, Concat", "[[-1, 4], 1, Concat"))
    with pytest.raises(ModelConfigError, match=r"bad.yaml: layer 12 Concat failed on input"):
        Model(path)


def test_size_letter_resolves_to_base_yaml(tmp_path):
    _write_yaml(tmp_path, lambda b: b, name="yolov5_custom.yaml")
    model = Model(str(tmp_path / "yolov5s_custom.yaml"))
    assert model.yaml["width_multiple"] == 0.5 and model.model[0].conv.out_channels == 32


def test_nc_override_and_forward_shapes():
    model = Model("yolov5n.yaml", nc=3)
    out = model(torch.zeros(2, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    model.eval()
    y, raw = model(torch.zeros(1, 3, 64, 96))
    assert y.shape == (1, 3 * (96 + 24 + 6), 8)


def test_cli_prints_summary_and_fails_cleanly(tmp_path):
    ok = subprocess.run(
        [sys.executable, "models/yolo.py", "--cfg", "yolov5n.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "Model Summary: 270 layers, 1872157 parameters" in ok.stdout
    bad = _write_yaml(tmp_path, BAD_YAMLS["unknown module"][0])
    fail = subprocess.run(
        [sys.executable, "models/yolo.py", "--cfg", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert fail.returncode == 1 and "Traceback" not in fail.stdout + fail.stderr
    assert "bad.yaml: layer 9 SPPFF" in fail.stdout + fail.stderr


def test_registering_a_name_twice_is_an_error():
    from models.registry import REGISTRY, Channels, RegistryError, register

    before = dict(REGISTRY)
    with pytest.raises(RegistryError, match="'SElayer' is already registered to models.attention.channel.SE"):
        register("MyBlock", "SElayer", channels=Channels.KEEP)(type("MyBlock", (torch.nn.Module,), {}))
    with pytest.raises(RegistryError, match="must be a Channels rule"):
        register("MyBlock", channels="keep")(type("MyBlock", (torch.nn.Module,), {}))
    assert REGISTRY == before


def test_registry_holds_every_module_and_common_re_exports_them():
    import torch.nn as nn

    import models.common as common
    from models.registry import REGISTRY, entries
    from models.yolo import Detect

    v61 = {"Conv", "DWConv", "Bottleneck", "BottleneckCSP", "C3", "SPP", "SPPF", "Focus", "Concat"}
    assert {e.name for e in entries(attention=False)} >= v61 | {"Detect", "nn.Upsample", "nn.BatchNorm2d"}
    assert REGISTRY["Detect"].cls is Detect and REGISTRY["nn.Upsample"].cls is nn.Upsample
    assert len(entries(attention=True)) >= 13
    for name, entry in REGISTRY.items():
        if "." not in name:
            assert getattr(common, name) is entry.cls and name in dir(common)
    for name in v61:  # checkpoints pickle these paths
        assert getattr(common, name).__module__ == "models.common"
    assert Detect.__module__ == Model.__module__ == "models.yolo"


def _imports(path, package_root):
    """(top-level imports of project modules, imports inside functions) of one source file."""
    import ast

    tree = ast.parse(path.read_text())
    top, late = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        names = [n for n in names if n.split(".")[0] in package_root]
        if node.col_offset:  # indented: inside a function or block
            late.extend(names)
        top.update(names)
    return top, late


def test_import_graph_has_no_cycles_and_no_late_imports():
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for d in ("models", "utils")
        for p in (ROOT / d).rglob("*.py")
    }
    graph, late = {}, {}
    for mod, path in files.items():
        top, inner = _imports(path, {"models", "utils"})
        graph[mod] = {n for n in top if n in files and n != mod and not mod.startswith(n + ".")}
        late[mod] = [n for n in inner if not n.startswith(mod)]  # yolo.py's __main__ guard imports itself
    owned = [m for m in files if m.startswith("models.") or m in ("utils.plots", "utils.metrics")]
    assert {m: late[m] for m in owned if late[m]} == {}
    done, stack = set(), []

    def visit(m):
        assert m not in stack, f"import cycle: {' -> '.join(stack[stack.index(m) :] + [m])}"
        if m not in done:
            stack.append(m)
            for n in sorted(graph[m]):
                visit(n)
            stack.pop()
            done.add(m)

    for m in sorted(graph):
        visit(m)
    assert graph["models.registry"] == set()  # knows no block
