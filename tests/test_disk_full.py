"""A full disk: every file the project writes is written whole or not at all, and training ends in one line naming
the file, the error and the last intact checkpoint (exit code 1, no traceback)."""

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from full_disk import full_disk

import utils.atomic
from models.loading import load_checkpoint
from models.yolo import Model
from utils.atomic import WriteError, atomic_write
from utils.checkpoints import save_checkpoint
from utils.loggers import Loggers
from utils.plots import plot_images
from utils.train_utils import write_failure

from conftest import ROOT, tiny_train_args


def _only_files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("existed", [True, False])
def test_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, existed):
    target = tmp_path / "results.csv"
    if existed:
        target.write_bytes(b"old rows\n")
    monkeypatch.setattr(utils.atomic, "_temp_file", full_disk(free=3))
    with pytest.raises(WriteError) as e:
        atomic_write(target, lambda f: f.write(b"new rows, more than three bytes\n"))
    text = str(e.value)
    assert "\n" not in text and str(target) in text and os.strerror(errno.ENOSPC) in text, text
    assert _only_files(tmp_path) == (["results.csv"] if existed else [])
    assert not existed or target.read_bytes() == b"old rows\n"


def test_checkpoint_on_a_full_disk_keeps_the_last_intact_one(tmp_path, monkeypatch):
    model = Model("yolov5n.yaml", nc=1)
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 3, "model": model}, path)
    monkeypatch.setattr(utils.atomic, "_temp_file", full_disk(free=100_000))
    with pytest.raises(WriteError) as e:  # torch.save's RuntimeError('unexpected pos') names the OSError behind it
        save_checkpoint({"epoch": 4, "model": model}, path)
    assert "No space left on device" in str(e.value) and "previous contents are kept" in str(e.value)
    monkeypatch.undo()
    assert _only_files(tmp_path) == ["last.pt"] and load_checkpoint(path)["epoch"] == 3


def test_results_csv_and_plots_on_a_full_disk(tmp_path, monkeypatch):
    log = Loggers(tmp_path, tensorboard=False)
    log.log_epoch(0, list(range(13)))
    before = (tmp_path / "results.csv").read_bytes()
    monkeypatch.setattr(utils.atomic, "_temp_file", full_disk(free=10))
    with pytest.raises(WriteError, match="results.csv"):
        log.log_epoch(1, list(range(13)))
    with pytest.raises(WriteError, match="train_batch0.jpg"):
        plot_images(torch.rand(2, 3, 64, 64), np.zeros((0, 6)), fname=tmp_path / "train_batch0.jpg")
    assert (tmp_path / "results.csv").read_bytes() == before and _only_files(tmp_path) == ["results.csv"]


def test_write_failure_message_for_an_oserror_from_elsewhere(tmp_path):
    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "events.out"))
    text = str(write_failure(e, tmp_path, tmp_path / "weights/last.pt", 4))
    assert text == (
        f"cannot write {tmp_path / 'events.out'}: No space left on device; "
        f"last intact checkpoint: {tmp_path / 'weights/last.pt'} (epoch 4)"
    )


def test_file_size_limit_is_a_real_kernel_write_failure(tmp_path):
    """RLIMIT_FSIZE (no root needed) makes the kernel refuse writes past 64 kB with EFBIG, mid torch.save."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        import torch
        from utils.atomic import WriteError
        from utils.checkpoints import save_checkpoint
        try:
            save_checkpoint({{"epoch": 2, "w": torch.zeros(100_000)}}, {str(path)!r})
        except WriteError as e:
            print(e)
            sys.exit(3)
        """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "File too large" in r.stdout and str(path) in r.stdout, r.stdout + r.stderr
    assert _only_files(tmp_path) == ["last.pt"] and torch.load(path)["epoch"] == 1


def test_training_onto_a_full_disk_ends_in_one_line(tiny_data, tmp_path):
    """train.py, 2 epochs; the disk fills up during the second write of last.pt (1 MB of it fits)."""
    args = tiny_train_args(tiny_data, tmp_path, "--epochs", "2", "--no-tensorboard")
    code = (
        "import runpy, sys\nsys.path.insert(0, 'tests')\nimport utils.atomic\nfrom full_disk import full_disk\n"
        "utils.atomic._temp_file = full_disk(free=1_000_000, target_name='last.pt', after=1)\n"
        "sys.argv = ['train.py', *sys.argv[1:]]\nrunpy.run_path('train.py', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    last = tmp_path / "exp" / "weights" / "last.pt"
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR: ")]
    assert r.returncode == 1 and "Traceback" not in out and len(errors) == 1, out[-3000:]
    assert errors[0] == (
        f"ERROR: cannot write {last}: No space left on device (its previous contents are kept); "
        f"last intact checkpoint: {last} (epoch 0)"
    ), errors[0]
    assert _only_files(last.parent) == ["best.pt", "last.pt"] and load_checkpoint(last)["epoch"] == 0
