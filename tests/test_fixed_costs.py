"""The fixed costs around training: final validation and strip from memory, plots in the background, TensorBoard
images as their files' bytes."""

import threading
import time

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
import val
from models.loading import load_checkpoint
from models.yolo import Model
from utils.checkpoints import save_checkpoint
from utils.loggers import BackgroundJobs, Loggers
from utils.plots import plot_labels
from utils.torch_utils import ModelEMA, select_device
from utils.train_utils import strip_optimizer, stripped, training_checkpoint

from conftest import captured_log, tiny_train_args


def test_final_validation_from_memory_equals_validating_best_pt(tiny_data, tmp_path):
    opt = train.check_options(train.parse_opt(tiny_train_args(tiny_data, tmp_path, "--epochs", "2")))
    final = train.train(opt.hyp, opt, select_device("cpu"))
    best = tmp_path / "exp" / "weights" / "best.pt"
    again = val.run(tiny_data, weights=best, batch_size=8, imgsz=64, workers=0, plots=False, project=tmp_path)[0]
    assert final[:4] == again[:4]


def test_strip_from_memory_writes_what_strip_from_disk_writes(tmp_path):
    model = Model("yolov5n.yaml", nc=2)
    ema = ModelEMA(model)
    ckpt = training_checkpoint(3, 0.5, model, ema, torch.optim.SGD(model.parameters(), lr=0.1))
    for name in ("disk.pt", "memory.pt"):
        save_checkpoint(ckpt, tmp_path / name)
    strip_optimizer(stripped(load_checkpoint(tmp_path / "disk.pt")), tmp_path / "disk.pt")
    strip_optimizer(stripped(ckpt), tmp_path / "memory.pt")
    disk, memory = load_checkpoint(tmp_path / "disk.pt"), load_checkpoint(tmp_path / "memory.pt")
    assert list(disk) == list(memory) and disk["date"] == memory["date"] and disk["epoch"] == memory["epoch"] == -1
    assert all(disk[k] is None and memory[k] is None for k in ("optimizer", "ema", "updates", "exact", "best_fitness"))
    a, b = disk["model"].state_dict(), memory["model"].state_dict()
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in memory["model"].parameters())


def test_background_jobs_run_in_order_off_the_calling_thread_and_failures_warn():
    jobs, ran = BackgroundJobs(), []

    def job(i):
        time.sleep(0.01 * (3 - i))
        ran.append((i, threading.current_thread() is threading.main_thread()))

    def broken():
        raise ValueError("no labels")

    for i in range(3):
        jobs.submit(job, i)
    jobs.submit(broken)
    with captured_log() as log:
        jobs.close()
    assert ran == [(0, False), (1, False), (2, False)]
    assert any("broken failed: ValueError: no labels" in line for line in log)


def test_plot_labels_in_the_background_writes_the_same_files(tmp_path):
    labels = np.concatenate([np.random.default_rng(0).integers(0, 3, (50, 1)), np.full((50, 4), 0.3)], 1)
    plot_labels(labels, ["a", "b", "c"], tmp_path / "direct")
    jobs = BackgroundJobs()
    jobs.submit(plot_labels, labels, ["a", "b", "c"], tmp_path / "background")
    jobs.close()
    for name in ("labels.jpg", "labels_correlogram.jpg"):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "background" / name).read_bytes()


def test_tensorboard_images_are_the_files_bytes(tmp_path):
    from PIL import Image

    jpg, png = tmp_path / "train_batch0.jpg", tmp_path / "results.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpg)
    Image.new("RGBA", (20, 10), (0, 0, 255, 255)).save(png)
    logger = Loggers(tmp_path / "tb")
    logger.log_image(jpg, 2)
    logger.log_image(png)
    logger.log_image(tmp_path / "absent.png")
    logger.close()
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    ea.Reload()
    assert sorted(ea.Tags()["images"]) == ["results", "train_batch0"]
    event = ea.Images("train_batch0")[0]
    assert (event.step, event.width, event.height) == (2, 40, 30)
    assert event.encoded_image_string == jpg.read_bytes()
    assert ea.Images("results")[0].encoded_image_string == png.read_bytes()
