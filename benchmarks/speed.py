"""Training and inference speed of one model as train.py, val.py and detect.py run it, with a baseline ratio.

Usage:
    python benchmarks/speed.py --cfg yolov5n.yaml --weights W.pt --data raccoon.yaml --img 320 --save new.json
    python benchmarks/speed.py ... --baseline old.json   # adds the ratio of every figure to old.json's

Each phase runs in its own forked process (so its peak RSS is its own) and is repeated --warmup + --repeats times;
the figures are medians over the --repeats timed ones. The first line names the CPU (model and its vector/matrix
flags: avx2, avx512*, amx*) and the GPU when one is used: figures from different machines do not compare.
- whole: `python train.py` (--cfg, --weights, --data, --hyp, --img, --batch-size, --workers, --whole-epochs) as a
  subprocess, the way a user runs it: its wall-clock and CPU seconds (user + system, dataloader workers included),
  and its phases from the time each log line arrived: imports (until the first line), start-up (until `Starting
  training`), the first epoch, the mean of the other epochs (each with its validation) and what follows the last
  epoch (strip, validation of best.pt, plots).
- train: train.py's Trainer (--cfg, --weights, --data, --hyp, --img, --batch-size, --workers) runs its own
  train_one_epoch (augmenting loader, forward, loss, backward, optimizer step, EMA); images/s = images / epoch time.
  The epochs are the warm-up epochs of a run (the optimizer steps on almost every batch). AutoAnchor is skipped.
- val: val.run on the --data val split at batch --val-batch-size (rect batches, conf 0.001, iou 0.6): its own
  inference and NMS ms/image, and P, R, mAP@.5, mAP@.5:.95 (from the first run).
- detect: detect.run at batch 1 on --source (default: the val images), nothing saved: latency = pre-process +
  inference + NMS ms/image from its `Speed:` line.
The script uses only train.Trainer, val.run and detect.run, so it measures any checkout of this project.
"""

import argparse
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.general import LOGGER

PHASES = ("train", "val", "detect", "whole")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
HIGHER_IS_BETTER = ("train images/s",)
ACCURACY = ("P", "R", "mAP@.5", "mAP@.5:.95")
SPEED_LINE = re.compile(r"Speed: ([\d.]+)ms pre-process, ([\d.]+)ms inference, ([\d.]+)ms NMS")


def parse_opt(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5n.yaml", help="model yaml for training")
    p.add_argument("--weights", required=True, help="checkpoint: initial training weights, val/detect model")
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset.yaml path")
    p.add_argument("--hyp", default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"), help="hyperparameters path")
    p.add_argument("--img", "--img-size", type=int, default=320, help="train, val and detect image size (pixels)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--val-batch-size", type=int, default=32, help="validation batch size")
    p.add_argument("--source", help="detect.py --source (default: the dataset's val images)")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers, as train.py/val.py take it")
    p.add_argument("--device", default="", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--half", action="store_true", help="--half for val/detect: FP16 on CUDA, bfloat16 autocast on CPU")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default torch's)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per phase (epochs for train)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per phase first")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="what to measure")
    p.add_argument("--whole-epochs", type=int, default=3, help="epochs of the whole-process train.py run")
    p.add_argument("--save", help="write the figures to this JSON file")
    p.add_argument("--baseline", help="JSON file written by --save: print each figure's ratio against it")
    opt = p.parse_args(argv)
    if min(opt.repeats, opt.batch_size, opt.val_batch_size, opt.whole_epochs) < 1 or min(opt.warmup, opt.workers) < 0:
        p.error("--repeats, --batch-size, --val-batch-size and --whole-epochs must be >= 1, --warmup, --workers >= 0")
    if opt.threads is not None and opt.threads < 1:
        p.error(f"--threads must be >= 1, got {opt.threads}")
    for name in ("weights", "data", "baseline"):
        path = getattr(opt, name)
        if path and not Path(path).is_file():
            p.error(f"--{name} {path}: file not found")
    return opt


@contextmanager
def captured_info():
    """The project LOGGER's messages at INFO and above, collected instead of printed."""
    lines, old_handlers, old_level = [], LOGGER.handlers[:], LOGGER.level
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.handlers = [handler]
    LOGGER.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        LOGGER.handlers = old_handlers
        LOGGER.setLevel(old_level)


class _EnoughEpochs(Exception):
    """Raised by the timed train_one_epoch to end Trainer.fit after the last measured epoch."""


def _timed_epochs(trainer, n):
    """Wrap trainer.train_one_epoch to record the seconds of each epoch and stop fit() after n of them."""
    seconds, inner = [], trainer.train_one_epoch

    def train_one_epoch(epoch):
        t = time.perf_counter()
        result = inner(epoch)
        seconds.append(time.perf_counter() - t)
        if len(seconds) == n:
            raise _EnoughEpochs
        return result

    trainer.train_one_epoch = train_one_epoch
    return seconds


def measure_train(opt, tmp):
    """Median training images/s over --repeats epochs of train.py's own loop."""
    import train
    from utils.torch_utils import select_device

    n = opt.warmup + opt.repeats
    args = [
        "--cfg",
        opt.cfg,
        "--weights",
        opt.weights,
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
        "--epochs",
        str(n + 1),
        "--noautoanchor",
        "--noval",
        "--nosave",
        "--project",
        str(tmp),
        "--name",
        "train",
        "--device",
        opt.device,
    ]
    with captured_info():
        topt = train.check_options(train.parse_opt(args))
        trainer = train.Trainer(topt.hyp, topt, select_device(opt.device, opt.batch_size))
        trainer.plots = False
        seconds = _timed_epochs(trainer, n)
        try:
            trainer.fit()
        except _EnoughEpochs:
            pass
    images = len(trainer.dataset)
    return {"train images/s": statistics.median(images / s for s in seconds[opt.warmup :])}


def measure_val(opt, tmp):
    """Median val.run inference and NMS ms/image, and the accuracy of the first run."""
    import val

    runs = []
    for _ in range(opt.warmup + opt.repeats):
        with captured_info():
            results, _, t = val.run(
                opt.data,
                opt.weights,
                batch_size=opt.val_batch_size,
                imgsz=opt.img,
                device=opt.device,
                workers=opt.workers,
                half=opt.half,
                plots=False,
                project=tmp,
                name="val",
                exist_ok=True,
            )
        runs.append((results[:4], t))
    timed = [t for _, t in runs[opt.warmup :]]
    out = dict(zip(ACCURACY, (float(x) for x in runs[0][0])))
    out[f"val inference ms/img (batch {opt.val_batch_size})"] = statistics.median(t[1] for t in timed)
    out["val NMS ms/img"] = statistics.median(t[2] for t in timed)
    return out


def measure_detect(opt, tmp):
    """Median detect.run latency (pre-process + inference + NMS) and inference ms/image at batch 1."""
    import detect
    from utils.downloads import check_dataset

    source = opt.source
    if source is None:
        with captured_info():
            source = check_dataset(opt.data)["val"]
    runs = []
    for _ in range(opt.warmup + opt.repeats):
        with captured_info() as log:
            detect.run(
                weights=opt.weights,
                source=source,
                imgsz=(opt.img, opt.img),
                device=opt.device,
                half=opt.half,
                nosave=True,
                project=tmp,
                name="detect",
                exist_ok=True,
            )
        speeds = [SPEED_LINE.search(line) for line in log]
        match = next((m for m in speeds if m), None)
        if match is None:
            raise RuntimeError(f"detect.py printed no Speed line for --source {source} (no images?)")
        runs.append([float(x) for x in match.groups()])
    timed = runs[opt.warmup :]
    return {
        "detect latency ms/img (batch 1)": statistics.median(sum(r) for r in timed),
        "detect inference ms/img": statistics.median(r[1] for r in timed),
    }


def timed_process(args, cwd):
    """Run a command to its end: (wall seconds, CPU seconds of it and its children, [(seconds, output line)]).

    stderr is read with stdout (YOLOv5 v6.1 logs to stderr), each line stamped when it arrives."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in p.stdout]
    rc, wall = p.wait(), time.perf_counter() - t0
    if rc:
        tail = "\n".join([line for _, line in lines[-5:]] or ["(no output)"])
        raise RuntimeError(f"{' '.join(map(str, args[:4]))} exited with {rc}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, lines


def _whole_run(opt, tmp, i):
    """One `python train.py` subprocess: (wall seconds, CPU seconds, [(seconds since start, stdout line)])."""
    args = [sys.executable, "-u", str(ROOT / "train.py"), "--cfg", opt.cfg, "--weights", opt.weights]
    args += ["--data", opt.data, "--hyp", opt.hyp, "--img", str(opt.img), "--batch-size", str(opt.batch_size)]
    args += ["--workers", str(opt.workers), "--epochs", str(opt.whole_epochs), "--device", opt.device]
    args += ["--project", str(tmp), "--name", f"whole{i}"]
    return timed_process(args, ROOT)


def whole_phases(wall, lines):
    """Seconds of imports, start-up, first epoch, mean other epoch and after training from train.py's log lines."""

    def first(text, default):
        return next((t for t, line in lines if text in line), default)

    starts = [t for t, line in lines if line.split()[:2] == ["Epoch", "gpu_mem"]]
    end = first("epochs completed in", wall)
    edges = [*starts, end]
    epochs = [b - a for a, b in zip(edges, edges[1:])]
    return {
        "imports s": lines[0][0] if lines else wall,
        "start-up s (to the first epoch)": first("Starting training", wall),
        "first epoch s": epochs[0] if epochs else 0.0,
        "other epochs s (mean)": statistics.mean(epochs[1:]) if len(epochs) > 1 else 0.0,
        "after training s": wall - end,
    }


def measure_whole(opt, tmp):
    """Medians of the whole train.py process: wall and CPU seconds, and its phases."""
    runs = [_whole_run(opt, tmp, i) for i in range(opt.warmup + opt.repeats)][opt.warmup :]
    total = f"whole-process s ({opt.whole_epochs} epochs)"
    keyed = [{total: w, "whole-process CPU s": c, **whole_phases(w, lines)} for w, c, lines in runs]
    return {k: statistics.median(r[k] for r in keyed) for k in keyed[0]}


def _cpuinfo(key):
    """The value of the first `key : value` line of /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.split(":")[0].strip() == key), "")
    except OSError:
        return ""


def machine(device=""):
    """'<CPU model> (<n> cores; avx2 avx512f ...)', with the CUDA device's name when device selects one."""
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    flags = [f for f in CPU_FLAGS if f in _cpuinfo("flags").split()]
    s = f"{name} ({os.cpu_count()} cores; {' '.join(flags) or 'no ' + '/'.join(CPU_FLAGS[:2])})"
    if str(device).strip().lower() != "cpu" and torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)}"
    return s


MEASURES = {"train": measure_train, "val": measure_val, "detect": measure_detect, "whole": measure_whole}


def _reset_peak_rss():
    """Make VmHWM restart from the current RSS (Linux >= 4.0), so a forked child's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        LOGGER.warning(f"WARNING: /proc/self/clear_refs not writable ({e}): peak RSS includes the parent's peak")


def _peak_rss_mb():
    """This process's peak RSS (VmHWM) plus the largest peak of its finished children (dataloader workers)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return (kb + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def run_phase(phase, opt):
    """The figures of one phase, with its peak RSS; meant to run in its own process."""
    _reset_peak_rss()
    if opt.threads:
        torch.set_num_threads(opt.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = MEASURES[phase](opt, Path(tmp))
    gc.collect()  # ends the loaders' workers, so their peak RSS is in RUSAGE_CHILDREN
    out[f"{phase} peak RSS (MB)"] = _peak_rss_mb()
    return out


def _child(conn, phase, opt):
    try:
        conn.send(("ok", run_phase(phase, opt)))
    except Exception as e:  # any failure goes back to the parent as a message
        conn.send(("error", f"{type(e).__name__}: {e}"))
    conn.close()


def run_phase_in_fork(phase, opt):
    """run_phase in a forked process; its figures, or a RuntimeError naming the phase when it failed or died."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, phase, opt))
    p.start()
    child.close()
    try:
        status, result = parent.recv()
    except EOFError:
        status, result = "error", "the process died (out of memory?)"
    p.join()
    if status != "ok":
        raise RuntimeError(f"speed.py: {phase}: {result}")
    return result


def ratio(key, new, old):
    """How many times better new is than old: higher-is-better figures new/old, times and memory old/new."""
    if key in ACCURACY or not old or not new:
        return None
    return new / old if key in HIGHER_IS_BETTER else old / new


def report(figures, baseline=None):
    """Markdown table of the figures, with the baseline's value and the ratio (x better) when given."""
    head = ["figure", "value"] + (["baseline", "ratio"] if baseline is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, value in figures.items():
        row = [key, f"{value:.4g}"]
        if baseline is not None:
            old = baseline.get(key)
            r = ratio(key, value, old) if old is not None else None
            diff = f"{value - old:+.4f}" if key in ACCURACY and old is not None else ""
            row += ["" if old is None else f"{old:.4g}", f"{r:.2f}x" if r else diff]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def load_baseline(path):
    """The figures of a --save JSON file; a ValueError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        return {k: float(v) for k, v in data["figures"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--baseline {path}: not a speed.py --save file ({e})") from e


def main(argv=None):
    opt = parse_opt(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("speed.py: peak RSS is read with fork and /proc (Linux only)")
    try:
        baseline = load_baseline(opt.baseline) if opt.baseline else None
    except ValueError as e:
        sys.exit(f"speed.py: {e}")
    figures = {}
    for phase in opt.phases:
        try:
            figures.update(run_phase_in_fork(phase, opt))
        except RuntimeError as e:
            LOGGER.error(f"ERROR: {e}")
            return 1
    setup = {
        k: getattr(opt, k)
        for k in (
            "cfg",
            "weights",
            "data",
            "img",
            "batch_size",
            "val_batch_size",
            "workers",
            "device",
            "half",
            "repeats",
            "warmup",
        )
    }
    setup.update(
        torch=torch.__version__, threads=opt.threads or torch.get_num_threads(), cpus=os.cpu_count(), root=str(ROOT)
    )
    setup["machine"] = machine(opt.device)
    print(
        f"{Path(opt.weights).name}, {opt.cfg}, img {opt.img}: medians of {opt.repeats} runs, torch "
        f"{torch.__version__}, {setup['threads']} threads\n{setup['machine']}\n"
    )
    print(report(figures, baseline))
    if opt.save:
        Path(opt.save).write_text(json.dumps({"setup": setup, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
