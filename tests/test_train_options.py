"""train.py flags on a tiny dataset: caching, rect, multi-scale, single-cls, image weights, optimizers, freeze,
save period, evolve, and the per-epoch block hook (DynamicConv temperature); one epoch per attention variant."""

import csv
from pathlib import Path

import pytest

import train
from models.loading import load_checkpoint

from conftest import ROOT, captured_log, tiny_train_args

VARIANTS = sorted(p.name.replace("yolov5_", "yolov5n_") for p in (ROOT / "models").glob("yolov5_*.yaml"))


def _train(data, project, *extra, cfg="yolov5n.yaml"):
    args = tiny_train_args(data, project, *extra, cfg=cfg)
    with captured_log() as lines:
        train.main(train.parse_opt(args))
    return lines


def test_many_flags_in_one_run(tiny_data, tmp_path):
    lines = _train(
        tiny_data,
        tmp_path,
        "--epochs",
        "2",
        "--cache",
        "ram",
        "--multi-scale",
        "--single-cls",
        "--image-weights",
        "--cos-lr",
        "--optimizer",
        "AdamW",
        "--label-smoothing",
        "0.1",
        "--freeze",
        "3",
        "--save-period",
        "1",
        "--patience",
        "5",
    )
    w = tmp_path / "exp" / "weights"
    assert (w / "epoch0.pt").is_file() and (w / "epoch1.pt").is_file()
    assert any(ln.startswith("freezing model.2.") for ln in lines)
    assert not any(ln.startswith("freezing model.3.") for ln in lines)
    model = load_checkpoint(w / "best.pt")["model"]
    assert model.names == ["item"] and model.model[-1].nc == 1 and model.hyp["label_smoothing"] == 0.1
    ckpt = load_checkpoint(w / "epoch1.pt")
    assert type(ckpt["optimizer"]) is dict and ckpt["optimizer"]["param_groups"][0]["betas"] == (0.937, 0.999)


def test_rect_disk_cache_adam(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, "--epochs", "1", "--rect", "--cache", "disk", "--optimizer", "Adam", "--noval")
    shapes = Path(tiny_data).parent / "shapes"
    assert list((shapes / "labels" / "train.cache-images").glob("*.npy"))
    assert not list((shapes / "images").rglob("*.npy")), "image caches never go into the image folders"
    assert (tmp_path / "exp" / "weights" / "last.pt").is_file()


def test_evolve_two_generations(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, "--epochs", "1", "--evolve", "2")
    d = tmp_path / "exp"
    with open(d / "evolve.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 3 and rows[0][:3] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5"]
    assert rows[1][7:] != rows[2][7:], "the second generation must mutate the hyps"
    assert (d / "hyp_evolve.yaml").is_file() and (d / "evolve.png").is_file()


def test_dynamic_temperature_annealed_and_logged(tiny_data, tmp_path):
    lines = _train(tiny_data, tmp_path, "--epochs", "2", "--noval", cfg="yolov5n_DynamicConv.yaml")
    hooks = [ln for ln in lines if ln.startswith("block hooks:")]
    # annealed over min(10, epochs) = 2 epochs: 30 on the first, 1 on the last
    assert len(hooks) == 2 and "model.10.temperature=30," in hooks[0] and "model.10.temperature=1," in hooks[1]
    ema = load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")["model"]
    assert abs(ema.model[10].temperature - 1) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("cfg", VARIANTS)
def test_one_epoch_per_variant(tiny_data, tmp_path, cfg):
    _train(tiny_data, tmp_path, "--epochs", "1", cfg=cfg)
    with open(tmp_path / "exp" / "results.csv") as f:
        assert len(list(csv.reader(f))) == 2


def _opt(data, project, *extra):
    return train.parse_opt(tiny_train_args(data, project, *extra))


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--epochs", "0")])
def test_zero_batch_size_or_epochs_is_a_clear_error(tiny_data, tmp_path, flag, value):
    with pytest.raises(ValueError, match=f"{flag} {value}: must be at least 1"):
        train.main(_opt(tiny_data, tmp_path, flag, value))


def test_hyp_missing_a_key_names_the_key_and_file(tiny_data, tmp_path):
    import yaml

    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    del hyp["mosaic"]
    path = tmp_path / "hyp.yaml"
    path.write_text(yaml.safe_dump(hyp))
    with pytest.raises(ValueError, match=f"{path}: hyperparameter 'mosaic' is missing"):
        train.main(_opt(tiny_data, tmp_path / "runs", "--hyp", str(path), "--epochs", "1"))


def test_unwritable_project_is_one_line_without_traceback(tiny_data, tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("")
    args = [
        "--data",
        str(tiny_data),
        "--cfg",
        "yolov5n.yaml",
        "--img",
        "64",
        "--epochs",
        "1",
        "--project",
        str(blocker / "runs"),
    ]
    r = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out
    assert f"ERROR: --project {blocker / 'runs'}: cannot write the run folder" in out


@pytest.mark.parametrize("name", ["x.pth", "X.PT"])
def test_weights_with_other_suffixes_are_loaded_with_cfg(tiny_data, tmp_path, ref_weights, name):
    w = tmp_path / name
    w.write_bytes(ref_weights.read_bytes())
    with captured_log() as lines:
        train.main(_opt(tiny_data, tmp_path, "--epochs", "1", "--noval", "--nosave", "--weights", str(w)))
    assert f"Transferred 342/349 items (0 new) from {w}" in lines


def _dataset_copy(tiny_data, tmp_path, val_row):
    import shutil

    import yaml

    root = tmp_path / "data"
    shutil.copytree(Path(tiny_data).parent / "shapes", root, ignore=shutil.ignore_patterns("*.cache*"))
    bad = sorted((root / "labels" / "val").glob("*.txt"))[0]
    bad.write_text(val_row)
    cfg = yaml.safe_load(Path(tiny_data).read_text())
    cfg["path"] = str(root)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "d.yaml", bad


def test_val_class_id_out_of_range_is_named_before_training(tiny_data, tmp_path, ref_weights):
    import val

    data, bad = _dataset_copy(tiny_data, tmp_path, "7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=f"{bad}: class 7 >= nc=4"):
        train.main(_opt(data, tmp_path / "runs", "--epochs", "1"))
    assert not list((tmp_path / "runs").rglob("*.pt"))
    with pytest.raises(ValueError, match=f"{bad}: class 7 >= nc=4"):
        val.run(data=str(data), weights=str(ref_weights), imgsz=64, workers=0, project=str(tmp_path / "v"))


def test_nan_weights_stop_and_never_replace_a_good_best(tiny_data, tmp_path):
    import torch

    from models.yolo import Model
    from utils.checkpoints import save_checkpoint
    from utils.train_utils import NonFiniteLossError

    train.main(_opt(tiny_data, tmp_path, "--epochs", "1"))
    best = tmp_path / "exp" / "weights" / "best.pt"
    good = best.read_bytes()
    model = Model("yolov5n.yaml", nc=4)
    with torch.no_grad():
        model.model[0].conv.weight.fill_(float("nan"))
    save_checkpoint({"model": model.half(), "ema": None}, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite losses"):
        train.main(_opt(tiny_data, tmp_path, "--epochs", "2", "--exist-ok", "--weights", str(tmp_path / "nan.pt")))
    assert best.read_bytes() == good


def test_second_run_into_a_live_run_folder_is_refused(tiny_data, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "exp"
    run.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(live.pid))
        with pytest.raises(ValueError, match=f"{run} is in use by another training run \\(pid {live.pid}"):
            train.main(_opt(tiny_data, tmp_path, "--epochs", "1", "--exist-ok"))
    finally:
        live.kill()
        live.wait()
    with captured_log() as lines:  # the owner is gone: its lock is taken over
        train.main(_opt(tiny_data, tmp_path, "--epochs", "1", "--exist-ok", "--noval"))
    assert any("taking over the lock" in ln for ln in lines) and not (run / ".lock").exists()


def test_resume_rewrites_results_csv_once_per_epoch(tiny_data, tmp_path):
    import shutil
    import subprocess
    import sys

    train.main(_opt(tiny_data, tmp_path, "--epochs", "2", "--save-period", "1"))
    w = tmp_path / "exp" / "weights"
    shutil.copy(w / "epoch0.pt", w / "last.pt")  # as if killed during epoch 1, after its results row was written
    subprocess.run(
        [sys.executable, "train.py", "--resume", str(w / "last.pt")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with open(tmp_path / "exp" / "results.csv") as f:
        assert [int(r[0]) for r in list(csv.reader(f))[1:]] == [0, 1]
