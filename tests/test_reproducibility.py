"""Same command + same --seed = same results.csv, whatever --workers, and a resumed run equals an uninterrupted one."""

import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
from benchmarks.compare import best_epoch
from models.loading import load_checkpoint
from utils.checkpoints import save_checkpoint
from utils.datasets import create_dataloader, set_loader_epoch
from utils.general import check_yaml
from utils.reproducibility import AUGMENT, seeded_rng, set_deterministic
from utils.train_utils import multi_scale_size

from conftest import tiny_train_args

HYP = check_yaml("data/hyps/hyp.scratch-low.yaml")
README = Path(__file__).resolve().parents[1] / "README.md"
STATED = re.compile(r"mAP@\.5 (\d\.\d+) ± (\d\.\d+), mAP@\.5:\.95 (\d\.\d+) ± (\d\.\d+)")


def _train(data, project, name, *extra):
    args = tiny_train_args(data, project, "--seed", "3", *extra, name=name)
    train.main(train.parse_opt(args))
    return project / name


def _hyp():
    with open(HYP) as f:
        return yaml.safe_load(f)


def _epoch_batches(loader, epoch):
    set_loader_epoch(loader, epoch)
    return [(im.clone(), t.clone(), p) for im, t, p, _ in loader]


def test_seeded_rng_is_a_pure_function_of_its_keys():
    a = seeded_rng(3, AUGMENT, 1, 5).random(4)
    assert np.array_equal(a, seeded_rng(3, AUGMENT, 1, 5).random(4))
    for keys in [(4, AUGMENT, 1, 5), (3, AUGMENT, 2, 5), (3, AUGMENT, 1, 6), (3, AUGMENT + 1, 1, 5)]:
        assert not np.array_equal(a, seeded_rng(*keys).random(4))
    assert 32 <= multi_scale_size(64, 32, seeded_rng(0, 1, 7)) <= 96


def test_deterministic_flag_selects_deterministic_kernels(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
    assert train.parse_opt(["--deterministic"]).deterministic and not train.parse_opt([]).deterministic


def test_loader_batches_do_not_depend_on_workers(tiny_data):
    path = str(tiny_data.parent / "shapes" / "images" / "train")
    runs = []
    for workers in (0, 2):
        loader, _ = create_dataloader(path, 64, 3, 32, hyp=_hyp(), augment=True, shuffle=True, workers=workers, seed=5)
        runs.append([_epoch_batches(loader, e) for e in (0, 1)])
    (a0, a1), (b0, b1) = runs
    for x, y in zip(a0 + a1, b0 + b1):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a0, a1)), "each epoch must draw new augmentations"


def test_results_identical_for_workers_0_2_3(tiny_data, tmp_path):
    csvs = [
        (_train(tiny_data, tmp_path, f"w{w}", "--epochs", "2", "--workers", str(w)) / "results.csv").read_text()
        for w in (0, 2, 3)
    ]
    assert len(csvs[0].splitlines()) == 3
    assert csvs[0] == csvs[1] == csvs[2]


def test_resumed_run_equals_uninterrupted(tiny_data, tmp_path):
    full = _train(tiny_data, tmp_path, "full", "--epochs", "3", "--workers", "0", "--save-period", "1")
    stopped = tmp_path / "stopped"  # the state of the run had it stopped after epoch 1
    (stopped / "weights").mkdir(parents=True)
    shutil.copy(full / "hyp.yaml", stopped / "hyp.yaml")
    opt = yaml.safe_load((full / "opt.yaml").read_text())
    (stopped / "opt.yaml").write_text(yaml.safe_dump({**opt, "save_dir": str(stopped), "workers": 2}))
    rows = (full / "results.csv").read_text().splitlines(keepends=True)
    (stopped / "results.csv").write_text("".join(rows[:3]))
    ckpt = load_checkpoint(full / "weights" / "epoch1.pt")
    assert ckpt["epoch"] == 1 and ckpt["exact"]["last_opt_step"] >= 0
    save_checkpoint(ckpt, stopped / "weights" / "last.pt")
    train.main(train.parse_opt(["--resume", str(stopped / "weights" / "last.pt")]))
    assert (stopped / "results.csv").read_text() == (full / "results.csv").read_text()


def readme_main_command():
    """The train.py arguments of the README's Quick start command 1 and its stated (mean, std) per mAP, or None."""
    quick = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    line = next(ln for ln in quick.splitlines() if "python train.py" in ln)
    args = shlex.split(line.split("python train.py", 1)[1].split("&&")[0])
    found = STATED.search(quick)
    return args, found and [float(x) for x in found.groups()]


@pytest.mark.slow
def test_readme_main_command_gives_stated_map(tmp_path):
    """Command 1 of the README (seed 0) lands within 3 std of the mAP the README states for seeds 0, 1, 2."""
    args, stated = readme_main_command()
    if not stated:
        pytest.fail("README.md Quick start states no 'mAP@.5 M ± S, mAP@.5:.95 M ± S' for its main command")
    train.main(train.parse_opt([*args, "--project", str(tmp_path), "--name", "demo", "--exist-ok"]))
    map50, map_, _ = best_epoch(tmp_path / "demo" / "results.csv")
    m50, s50, m, s = stated
    assert abs(map50 - m50) <= 3 * s50 + 0.005 and abs(map_ - m) <= 3 * s + 0.005, (map50, map_, stated)
