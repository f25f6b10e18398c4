"""CPU training throughput of models: the train.py step (augmenting loader, forward, loss, backward, SGD, EMA) timed.

Usage:
    python benchmarks/train_speed.py --cfg yolov5n.yaml yolov5s.yaml --img 320 --batch-size 16 --iters 10 --warmup 2
    python benchmarks/train_speed.py --cfg yolov5n.yaml yolov5n_SOCA.yaml --img 64 --batch-size 2 --iters 2 --threads 1

Each model is set up by train.py's own Trainer (dataset check, model, v6.1 optimizer parameter groups, EMA,
create_dataloader with the --hyp augmentations, loss gains) in a fresh forked process, then runs --warmup + --iters
steps of: next batch from the loader, /255, forward, ComputeLoss, backward, optimizer step, zero_grad, EMA update.
That is train.py's step during its warm-up epochs, where the optimizer steps on every batch (later train.py
accumulates gradients to a nominal batch of 64). AutoAnchor is skipped: it changes anchor values, not the cost.
Reported: median images/s and median s/iter over the --iters timed steps; peak RSS is the process's high-water mark
(VmHWM, reset when the process starts) plus, with --workers > 0, the largest dataloader worker's (ru_maxrss of
children), so pages shared with the workers count twice; params of the model.
"""

import argparse
import gc
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train
from benchmarks.compare import quiet_logging
from utils.general import LOGGER
from utils.loss import ComputeLoss

COLUMNS = ["model", "img", "batch", "images/s", "s/iter", "peak RSS (MB)", "params"]


def parse_opt(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", nargs="+", default=["yolov5n.yaml", "yolov5s.yaml"], help="model yamls, one row each")
    p.add_argument("--img", "--img-size", type=int, default=320, help="train image size (pixels)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset.yaml path")
    p.add_argument("--hyp", default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"), help="hyperparameters path")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers (0: load in the main process)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default torch's)")
    opt = p.parse_args(argv)
    if opt.iters < 1 or opt.batch_size < 1 or opt.warmup < 0 or opt.workers < 0:
        p.error("--iters and --batch-size must be >= 1, --warmup and --workers >= 0")
    if opt.threads is not None and opt.threads < 1:
        p.error(f"--threads must be >= 1, got {opt.threads}")
    return opt


def build_trainer(cfg, opt, save_dir):
    """train.py's Trainer for cfg with model, optimizer, EMA and data built (run files go to save_dir)."""
    args = [
        "--cfg",
        cfg,
        "--data",
        opt.data,
        "--hyp",
        opt.hyp,
        "--img",
        str(opt.img),
        "--batch-size",
        str(opt.batch_size),
        "--workers",
        str(opt.workers),
        "--project",
        str(save_dir),
        "--noautoanchor",
    ]
    topt = train.check_options(train.parse_opt(args))
    trainer = train.Trainer(topt.hyp, topt, torch.device("cpu"))
    trainer.plots = False
    trainer.build_model()
    trainer.build_optimizer()
    trainer.build_data()
    return trainer


def _batches(loader):
    while True:
        yield from loader


def timed_steps(trainer, n):
    """Run n training steps as train.py does; return [(images in batch, seconds)] per step, data loading included."""
    model, optimizer, ema = trainer.model, trainer.optimizer, trainer.ema
    compute_loss = ComputeLoss(model)
    model.train()
    optimizer.zero_grad()
    batches = _batches(trainer.train_loader)
    steps = []
    for _ in range(n):
        t = time.perf_counter()
        imgs, targets, _, _ = next(batches)
        imgs = imgs.float() / 255
        loss, _ = compute_loss(model(imgs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
        steps.append((imgs.shape[0], time.perf_counter() - t))
    return steps


def _reset_peak_rss():
    """Make VmHWM restart from the current RSS (Linux >= 4.0), so a forked child's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        LOGGER.warning(f"WARNING: /proc/self/clear_refs not writable ({e}): peak RSS includes the parent's peak")


def _vm_hwm_mb():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 1024


def benchmark(cfg, opt):
    """One table row (dict keyed by COLUMNS) for cfg; meant to run in its own process."""
    _reset_peak_rss()
    if opt.threads:
        torch.set_num_threads(opt.threads)
    with tempfile.TemporaryDirectory() as tmp, quiet_logging():
        trainer = build_trainer(cfg, opt, tmp)
        params = sum(p.numel() for p in trainer.model.parameters())
        steps = timed_steps(trainer, opt.warmup + opt.iters)[opt.warmup :]
        del trainer
        gc.collect()  # shuts down the loader's workers, so their peak RSS is in RUSAGE_CHILDREN
    rss = _vm_hwm_mb() + (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if opt.workers else 0.0)
    return {
        "model": Path(cfg).name,
        "img": opt.img,
        "batch": opt.batch_size,
        "images/s": statistics.median(n / s for n, s in steps),
        "s/iter": statistics.median(s for _, s in steps),
        "peak RSS (MB)": rss,
        "params": params,
    }


def _child(conn, cfg, opt):
    try:
        conn.send(("ok", benchmark(cfg, opt)))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
    conn.close()


def benchmark_in_fork(cfg, opt):
    """benchmark(cfg, opt) in a forked process; its result, or a RuntimeError naming cfg when it failed or died."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, cfg, opt))
    p.start()
    child.close()
    try:
        status, result = parent.recv()
    except EOFError:
        status, result = "error", "the process died (out of memory?)"
    p.join()
    if status != "ok":
        raise RuntimeError(f"train_speed.py: {cfg}: {result}")
    return result


def markdown_table(rows):
    """The rows as a markdown table."""
    fmt = {"images/s": "{:.2f}", "s/iter": "{:.3f}", "peak RSS (MB)": "{:.0f}"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(k, "{}").format(r[k]) for k in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None):
    opt = parse_opt(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("train_speed.py: peak RSS is read with fork and /proc (Linux only)")
    rows = []
    for cfg in opt.cfg:
        try:
            rows.append(benchmark_in_fork(cfg, opt))
        except RuntimeError as e:
            LOGGER.error(f"ERROR: {e}")
    print(
        f"CPU training steps, torch {torch.__version__}, {opt.threads or torch.get_num_threads()} threads, "
        f"{opt.workers} workers, {opt.iters} timed iters after {opt.warmup} warm-up\n"
    )
    print(markdown_table(rows))
    return 0 if len(rows) == len(opt.cfg) else 1


if __name__ == "__main__":
    sys.exit(main())
