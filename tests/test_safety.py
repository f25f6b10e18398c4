"""Hostile checkpoints: every payload is refused by every entry point with one line naming the file, and runs nothing.

The corpus is built here. A liveness test first proves each marker payload really runs its command under an
unrestricted `torch.load(weights_only=False)`, so a refusal below is a refusal of live code.
"""

import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from models.common import Conv
from models.config import load_model_yaml
from models.loading import attempt_load, load_checkpoint, module_classes
from models.yolo import Model
from utils.checkpoints import (
    SAFE_TORCH,
    UnsafeCheckpointError,
    UnsafeTorchError,
    checkpoint_safe_globals,
    save_checkpoint,
    torch_version,
)

from conftest import ROOT

TINY_CFG = {
    "nc": 1,
    "depth_multiple": 0.33,
    "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23]],
    "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
    "head": [[[0], 1, "Detect", ["nc", "anchors"]]],
}


class _Call:
    """Pickles as `fn(*args)`: what an attacker's __reduce__ does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _s(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _g(module, name):
    return f"c{module}\n{name}\n".encode()


def _call(fn, *args):
    return fn + b"(" + b"".join(args) + b"tR"


def _touch_list(marker):
    return b"](" + _s("touch") + _s(str(marker)) + b"e"


def _benign(path):
    torch.save({"epoch": -1, "model": Conv(3, 4), "wandb_id": None, "date": "2022-02-22"}, path)
    return path


def _swap_pickle(path, build):
    """Rewrite the zip's data.pkl with build(old bytes): the tampering route."""
    src = zipfile.ZipFile(path)
    entries = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    src.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in entries:
            out.writestr(name, build(data) if name.endswith("/data.pkl") else data)
    return path


def _raw(path, pkl):
    return _swap_pickle(_benign(path), lambda _: pkl)


def _nested(path, marker):
    buf = __import__("io").BytesIO()
    torch.save(_Call(os.system, f"touch {marker}"), buf)
    torch.save(
        {
            "epoch": 0,
            "model": Conv(3, 4),
            "wandb_id": _Call(torch.storage._load_from_bytes, buf.getvalue()),
            "date": "2022-02-22",
        },
        path,
    )
    return path


def _tampered(path, marker):
    evil = _call(_g("posix", "system"), _s(f"touch {marker}"))
    return _swap_pickle(
        _benign(path),
        lambda data: re.sub(rb"(wandb_id(?:q.)?)N", lambda m: m.group(1) + evil, data, count=1, flags=re.S),
    )


def _import_module_first(marker):
    """importlib.import_module('os') memoised first, then getattr(<memo>, 'system')(cmd)."""
    mod = _call(_g("importlib", "import_module"), _s("os")) + b"q\x010"
    system = _call(_g("builtins", "getattr"), b"h\x01", _s("system"))
    return b"\x80\x02" + mod + _call(system, _s(f"touch {marker}")) + b"."


PAYLOADS = {
    "os_system_reduce": lambda p, m: torch.save({"model": _Call(os.system, f"touch {m}")}, p),
    "subprocess_reduce": lambda p, m: torch.save({"model": _Call(subprocess.call, ["touch", str(m)])}, p),
    "nested_load_from_bytes": _nested,
    "builtins_eval": lambda p, m: torch.save({"x": _Call(eval, f"__import__('os').system('touch {m}')")}, p),
    "builtins_exec": lambda p, m: torch.save({"x": _Call(exec, f"import os; os.system('touch {m}')")}, p),
    "builtins_getattr": lambda p, m: _raw(
        p,
        b"\x80\x02"
        + _call(
            _call(_g("builtins", "getattr"), _call(_g("builtins", "__import__"), _s("os")), _s("system")),
            _s(f"touch {m}"),
        )
        + b".",
    ),
    "importlib_import_module": lambda p, m: _raw(p, _import_module_first(m)),
    "functools_partial": lambda p, m: _raw(
        p, b"\x80\x02" + _call(_call(_g("functools", "partial"), _g("subprocess", "call"), _touch_list(m))) + b"."
    ),
    "torch_nn_namespace_import": lambda p, m: _raw(
        p, b"\x80\x04" + _call(_g("torch.nn.modules.module", "torch.save"), _s("x"), _s(str(m))) + b"."
    ),
    "numpy_object_array": lambda p, m: torch.save(
        {"model": Conv(3, 4), "x": np.array([_Call(os.system, f"touch {m}")], dtype=object)}, p
    ),
    "legacy_format": lambda p, m: torch.save(
        {"model": _Call(os.system, f"touch {m}")}, p, _use_new_zipfile_serialization=False
    ),
    "tampered_data_pkl": _tampered,
    "plain_pickle_file": lambda p, m: p.write_bytes(pickle.dumps({"model": _Call(os.system, f"touch {m}")}, 2)),
    "model_class_with_args": lambda p, m: torch.save({"model": _Call(Model, TINY_CFG)}, p),
    "torch_layer_with_args": lambda p, m: torch.save({"model": _Call(nn.Linear, 1 << 16, 1 << 16)}, p),
    "models_function": lambda p, m: torch.save({"model": _Call(load_model_yaml, str(m))}, p),
}
MARKER_FREE = {"model_class_with_args", "torch_layer_with_args", "models_function"}


def _build(name, tmp_path):
    path, marker = tmp_path / f"{name}.pt", tmp_path / f"{name}.pwned"
    PAYLOADS[name](path, marker)
    return path, marker


def test_corpus_is_large_and_live(tmp_path):
    assert len(PAYLOADS) >= 12
    live = sorted(set(PAYLOADS) - MARKER_FREE - {"plain_pickle_file", "legacy_format", "numpy_object_array"})
    built = [_build(n, tmp_path) for n in live]
    code = (
        "import sys, torch\nfor p in sys.argv[1:]:\n"
        "    try: torch.load(p, weights_only=False)\n    except Exception: pass"
    )
    subprocess.run(
        [sys.executable, "-c", code, *[str(p) for p, _ in built]],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert [n for n, (_, m) in zip(live, built) if not m.exists()] == []


def test_naive_allow_list_would_construct_with_file_arguments(tmp_path):
    path, _ = _build("model_class_with_args", tmp_path)
    with torch.serialization.safe_globals([Model]):
        assert isinstance(torch.load(path, weights_only=True)["model"], Model)  # Model.__init__ ran on file data


def _assert_one_line_refusal(text, path):
    assert isinstance(text, str) and "\n" not in text.strip(), text
    assert str(path) in text and "refused" in text, text


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_python_api_refuses(tmp_path, name):
    path, marker = _build(name, tmp_path)
    for load in (load_checkpoint, attempt_load):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(path)
        _assert_one_line_refusal(str(e.value), path)
    assert not marker.exists()


def _script_args(entry, path, tiny_data, tmp_path):
    data, image = str(tiny_data), next((tiny_data.parent / "shapes" / "images" / "val").iterdir())
    common = ["--project", str(tmp_path / "runs"), "--name", "x"]
    if entry == "train_weights":
        return [
            "train.py",
            "--data",
            data,
            "--cfg",
            "yolov5n.yaml",
            "--weights",
            str(path),
            "--img",
            "64",
            "--epochs",
            "1",
            "--workers",
            "0",
            *common,
        ]
    if entry == "train_resume":
        return ["train.py", "--resume", str(_resume_dir(path, tiny_data, tmp_path))]
    if entry == "val":
        return ["val.py", "--data", data, "--weights", str(path), "--img", "64", "--workers", "0", *common]
    if entry == "detect":
        return ["detect.py", "--weights", str(path), "--source", str(image), "--img", "64", *common]
    return ["export.py", "--weights", str(path), "--include", "torchscript"]


def _resume_dir(path, tiny_data, tmp_path):
    """A run folder whose weights/last.pt is the payload, as --resume finds it."""
    import train

    run = tmp_path / "runs" / "exp"
    (run / "weights").mkdir(parents=True)
    last = run / "weights" / "last.pt"
    last.write_bytes(path.read_bytes())
    opt = {k: str(v) for k, v in vars(train.parse_opt([])).items()}
    opt.update(
        data=str(tiny_data),
        cfg="",
        imgsz=64,
        epochs=2,
        batch_size=4,
        workers=0,
        freeze=[0],
        project=str(tmp_path / "runs"),
        name="exp",
        save_dir=str(run),
        seed=0,
        save_period=-1,
        patience=100,
        evolve=None,
        resume=False,
        cache=None,
        label_smoothing=0.0,
    )
    (run / "opt.yaml").write_text(yaml.safe_dump(opt))
    (run / "hyp.yaml").write_text((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    return last


def _run_refused(entry, name, tiny_data, tmp_path):
    path, marker = _build(name, tmp_path)
    args = _script_args(entry, path, tiny_data, tmp_path)
    shown = args[2] if entry == "train_resume" else path
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    errors = [ln for ln in out.splitlines() if "refused" in ln]
    assert r.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert len(errors) == 1 and errors[0].startswith("ERROR: ") and str(shown) in errors[0], out[-3000:]
    assert not marker.exists()


ENTRIES = ["train_weights", "train_resume", "val", "detect", "export"]
FAST = {
    "nested_load_from_bytes": ENTRIES,
    "tampered_data_pkl": ["train_weights", "detect"],
    "model_class_with_args": ["val", "export"],
}
CASES = [
    pytest.param(e, n, marks=() if e in FAST.get(n, ()) else pytest.mark.slow)
    for n in sorted(PAYLOADS)
    for e in ENTRIES
]


@pytest.mark.parametrize("entry,name", CASES)
def test_scripts_refuse(entry, name, tiny_data, tmp_path):
    _run_refused(entry, name, tiny_data, tmp_path)


def test_allow_list_names_only_module_classes():
    named = {name: obj for obj, name in (e for e in checkpoint_safe_globals(module_classes()) if isinstance(e, tuple))}
    assert "models.yolo.Model" in named and "torch.nn.modules.conv.Conv2d" in named
    assert "models.common.autopad" not in named and "models.yolo.parse_model" not in named
    assert "torch.storage._load_from_bytes" not in named and "torch.nn.modules.module.torch.save" not in named
    assert all(isinstance(v, type) for k, v in named.items() if not k.startswith("numpy"))


def test_class_in_a_new_models_module_loads(tmp_path, monkeypatch):
    import types

    mod = types.ModuleType("models.moved_block")
    exec(
        "import torch.nn as nn\nclass Moved(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 2, 1)\n",
        mod.__dict__,
    )
    monkeypatch.setitem(sys.modules, "models.moved_block", mod)
    path = tmp_path / "moved.pt"
    save_checkpoint({"model": mod.Moved()}, path)
    assert type(load_checkpoint(path)["model"]).__name__ == "Moved"


def test_own_training_checkpoints_and_reference_load(tmp_path, ref_weights):
    from utils.torch_utils import ModelEMA
    from utils.train_utils import smart_optimizer, training_checkpoint

    ckpt = load_checkpoint(ref_weights)
    assert isinstance(ckpt["model"], Model) and ckpt["model"].names == ["raccoon"]
    model = Model(TINY_CFG)
    for name in ("SGD", "Adam", "AdamW"):
        opt = smart_optimizer(model, name, 0.01, 0.937, 5e-4)
        model(torch.zeros(1, 3, 32, 32))[0].sum().backward()
        opt.step()
        opt.param_groups[0]["lr"] = np.float64(0.01)
        save_checkpoint(training_checkpoint(3, np.float64(0.25), model, ModelEMA(model), opt), tmp_path / "last.pt")
        back = load_checkpoint(tmp_path / "last.pt")
        assert back["best_fitness"] == 0.25 and back["wandb_id"] is None and isinstance(back["date"], str)
        assert back["optimizer"]["param_groups"][0]["lr"] == 0.01 and len(back["optimizer"]["state"]) > 0
    assert oct((tmp_path / "last.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "version,safe",
    [("2.5.1", False), ("2.9.1+cu128", False), ("2.10.0", True), ("2.10.0a0+git1234", True), ("2.14.1", True)],
)
def test_torch_floor_is_read_at_load_time(monkeypatch, version, safe):
    monkeypatch.setattr(torch, "__version__", version)
    assert (torch_version() >= SAFE_TORCH) is safe


def test_requirements_ask_for_a_safe_torch():
    floors = dict(re.findall(r"^(torch|torchvision)>=(\d+\.\d+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert tuple(map(int, floors["torch"].split("."))) >= SAFE_TORCH and floors["torchvision"] == "0.25"


def test_old_torch_refuses_pickles_unless_trusted(monkeypatch, ref_weights, tmp_path):
    from utils.safetensors_file import save_safetensors

    st = save_safetensors(load_checkpoint(ref_weights)["model"], tmp_path / "r.safetensors")
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    for load in (load_checkpoint, attempt_load):
        with pytest.raises(UnsafeTorchError) as e:
            load(ref_weights)
        text = str(e.value)
        _assert_one_line_refusal(text, ref_weights)
        for word in ("torch 2.5.1", "2.10", "CVE-2025-32434", "CVE-2026-24747", ".safetensors", "--trust-weights"):
            assert word in text, text
    assert isinstance(load_checkpoint(ref_weights, trust=True)["model"], Model)
    assert isinstance(attempt_load(ref_weights, trust=True), Model)
    assert isinstance(load_checkpoint(st)["model"], Model)  # no pickle: nothing to refuse


def test_old_torch_trust_reaches_every_entry_point(monkeypatch, ref_weights, tiny_data, tmp_path):
    import export
    import hubconf
    import train
    import val

    from conftest import tiny_train_args

    monkeypatch.setattr(torch, "__version__", "2.5.1")
    opt = train.check_options(train.parse_opt(tiny_train_args(tiny_data, tmp_path, "--weights", str(ref_weights))))
    with pytest.raises(UnsafeTorchError):
        train.Trainer(opt.hyp, opt, torch.device("cpu")).build_model()
    opt.trust_weights = True
    train.Trainer(opt.hyp, opt, torch.device("cpu")).build_model()
    with pytest.raises(UnsafeTorchError):
        hubconf.custom(str(ref_weights), device="cpu")
    assert hubconf.custom(str(ref_weights), device="cpu", trust=True).names == ["raccoon"]
    copy = tmp_path / "r.pt"
    copy.write_bytes(ref_weights.read_bytes())
    assert export.run(weights=copy, include=["safetensors"], imgsz=(64, 64), trust_weights=True)
    with pytest.raises(UnsafeTorchError):
        val.run(data=tiny_data, weights=str(ref_weights), imgsz=64, project=tmp_path)


def _script_on_old_torch(args):
    code = "import runpy, sys, torch\ntorch.__version__ = '2.5.1'\nsys.argv = sys.argv[1:]\n"
    code += "runpy.run_path(sys.argv[0], run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_old_torch_detect_py_refuses_in_one_line_and_trust_weights_runs(ref_weights, tmp_path):
    image = sorted((ROOT / "tests" / "data" / "images").glob("*.jpg"))[0]
    args = [
        "detect.py",
        "--weights",
        str(ref_weights),
        "--source",
        str(image),
        "--img",
        "64",
        "--project",
        str(tmp_path),
    ]
    rc, out = _script_on_old_torch(args)
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR: ")]
    assert rc == 1 and "Traceback" not in out and len(errors) == 1, out[-3000:]
    assert str(ref_weights) in errors[0] and "CVE-2026-24747" in errors[0] and "2.10" in errors[0]
    rc, out = _script_on_old_torch([*args, "--trust-weights"])
    assert rc == 0 and "Results saved to" in out, out[-3000:]


def _imports_of(path):
    """Every module name an import statement in path names (late imports inside functions included)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_utils_imports_nothing_from_models():
    found = {
        f"{p.relative_to(ROOT)}: {name}"
        for p in (ROOT / "utils").rglob("*.py")
        for name in _imports_of(p)
        if name == "models" or name.startswith("models.")
    }
    assert not found, found
    code = (
        "import importlib, pkgutil, sys, utils\n"
        "for m in pkgutil.iter_modules(utils.__path__, 'utils.'): importlib.import_module(m.name)\n"
        "print([m for m in sys.modules if m == 'models' or m.startswith('models.')])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_attempt_load_lives_with_the_loading_code_and_v61_imports_still_work():
    import models.experimental
    import models.loading

    assert models.experimental.attempt_load is models.loading.attempt_load
    assert attempt_load.__module__ == "models.loading" and models.experimental.Ensemble.__module__ == "models.loading"


def test_allow_list_holds_every_registered_block_and_every_module_class_of_the_block_files():
    import importlib
    import pkgutil

    import models.attention
    from models.registry import entries

    allowed = module_classes()
    for e in entries():
        assert allowed.get(f"{e.cls.__module__}.{e.cls.__qualname__}") is e.cls, e.name
    for info in pkgutil.iter_modules(models.attention.__path__, "models.attention."):
        mod = importlib.import_module(info.name)
        own = [k for k, v in vars(mod).items() if isinstance(v, type) and issubclass(v, nn.Module)]
        assert all(f"{info.name}.{k}" in allowed for k in own), info.name
