"""train.py flags on a tiny dataset: caching, rect, multi-scale, single-cls, image weights, optimizers, freeze,
save period, evolve, and the per-epoch block hook (DynamicConv temperature); one epoch per attention variant."""
import csv
from pathlib import Path

import pytest

import train
from utils.checkpoints import load_checkpoint

from conftest import ROOT, captured_log

VARIANTS = sorted(p.name.replace("yolov5_", "yolov5n_") for p in (ROOT / "models").glob("yolov5_*.yaml"))


def _train(data, project, *extra, cfg="yolov5n.yaml"):
    args = ["--data", str(data), "--cfg", cfg, "--weights", "", "--img", "64", "--batch-size", "4", "--workers", "0",
            "--project", str(project), "--name", "exp", "--noautoanchor", *extra]
    with captured_log() as lines:
        train.main(train.parse_opt(args))
    return lines


def test_many_flags_in_one_run(tiny_data, tmp_path):
    lines = _train(tiny_data, tmp_path, "--epochs", "2", "--cache", "ram", "--multi-scale", "--single-cls",
                   "--image-weights", "--cos-lr", "--optimizer", "AdamW", "--label-smoothing", "0.1",
                   "--freeze", "3", "--save-period", "1", "--patience", "5")
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
    lines = _train(tiny_data, tmp_path, "--epochs", "2", "--noval", cfg="yolov5n_dynamic.yaml")
    hooks = [ln for ln in lines if ln.startswith("block hooks:")]
    assert len(hooks) == 2 and "model.10.temperature=30" in hooks[0] and "model.10.temperature=27.1" in hooks[1]
    ema = load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")["model"]
    assert abs(ema.model[10].temperature - 27.1) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("cfg", VARIANTS)
def test_one_epoch_per_variant(tiny_data, tmp_path, cfg):
    _train(tiny_data, tmp_path, "--epochs", "1", cfg=cfg)
    with open(tmp_path / "exp" / "results.csv") as f:
        assert len(list(csv.reader(f))) == 2
