"""Everything that needs a GPU, checked in one command: one markdown table of pass/fail, time and peak memory.

Usage:
    python benchmarks/gpu_check.py                          # CUDA device 0; table in $OUT (else runs/gpu_check)
    python benchmarks/gpu_check.py --out DIR --device 1
    python benchmarks/gpu_check.py --device cpu --quick     # the same path on CPU, tiny images and data (a test)
    python benchmarks/gpu_check.py --device cpu --quick --variants SE ECA --checks train val

Checks, each in its own subprocess (a crash or a CUDA error fails that row only; its log is in <out>/logs/; data,
runs and weights go to a temporary folder, removed at the end):
- cuda-tests: `pytest -m cuda` over the test files that hold such tests;
- train: `train.py` for 1 epoch from scratch (AMP on CUDA) of yolov5n and of every registered variant
  (`models.variants.variant_entries`), img 320, on a freshly generated copy of the bundled synthetic shapes data;
- val: `val.py --half` (FP16 on CUDA, bfloat16 autocast on CPU) of each trained best.pt;
- autobatch: AutoBatch's batch size for yolov5n at img 320 (`train.py --batch-size -1`);
- speed: `benchmarks/speed.py` rows (train images/s, val and detect ms/image, whole train.py process) on the
  bundled raccoon checkpoint and its 40 images.
Trainings and validations run --jobs at a time; AutoBatch, the tests and the speed rows run alone afterwards (they
measure free memory or time). --budget bounds the whole run: checks that cannot start in time fail as not run.
Exit code 1 when any check failed.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHECKS = ("cuda-tests", "train", "val", "autobatch", "speed")
RESULT = "GPU_CHECK_RESULT "  # a child's last stdout line: this prefix, then JSON {"detail", "peak_mb"}
RACCOON = ROOT / "tests" / "data" / "data" / "raccoon"
REFERENCE_WEIGHTS = ROOT / "tests" / "data" / "reference" / "raccoon_yolov5n_best.pt"
SPEED_ROWS = ("train images/s", "val inference ms/img", "detect latency ms/img", "whole-process s")


@dataclass
class Check:
    """One row: a name, the command that checks it, and what it gave."""

    name: str
    cmd: list
    timeout: float
    result: str = "not run"
    seconds: float = 0.0
    peak_mb: float = None
    detail: str = ""
    after: list = field(default_factory=list)  # checks that need this one to pass first

    @property
    def passed(self):
        return self.result == "pass"


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="0", help="CUDA device (default 0), or cpu")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_check"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny images, data and epochs (the CPU self-test)")
    p.add_argument("--variants", nargs="+", help="models to train: plain and/or registered names (default all)")
    p.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS), help="which checks to run")
    p.add_argument("--jobs", type=int, help="trainings/validations at a time (default: 4 on CUDA, 1 on CPU)")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default: 480 on CUDA, 1800 on CPU)")
    p.add_argument("--child", choices=("train", "val", "autobatch"), help=argparse.SUPPRESS)
    p.add_argument("--child-args", default="{}", help=argparse.SUPPRESS)
    opt = p.parse_args(argv)
    opt.cuda = opt.device.strip().lower() != "cpu"
    opt.jobs = opt.jobs or (4 if opt.cuda else 1)
    opt.budget = opt.budget or (480 if opt.cuda else 1800)
    opt.variants = resolve_variants(p, opt.variants)
    return opt


def resolve_variants(parser, names):
    """['plain', registered block names...] in registry order; unknown names are a usage error."""
    from models.variants import variant_entries

    known = ["plain", *(e.name for e in variant_entries())]
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--variants {' '.join(unknown)}: not registered; choose from {' '.join(known)}")
    return [n for n in known if n in names]


def settings(opt):
    """Image size, batch size, shapes split sizes and per-check timeouts of this mode."""
    if opt.quick:
        return {"img": 64, "batch": 4, "n_train": 8, "n_val": 4, "train_s": 300, "val_s": 120, "speed_s": 600}
    return {"img": 320, "batch": 16, "n_train": 240, "n_val": 60, "train_s": 240, "val_s": 120, "speed_s": 300}


def prepare_data(out, s):
    """A shapes dataset (utils.synthetic, seed 0) and a copy of the bundled raccoon split, with their yamls."""
    import yaml

    from utils.synthetic import make_shapes

    data = out / "data"
    shapes = make_shapes(data / "shapes", n_train=s["n_train"], n_val=s["n_val"], seed=0)
    names = ["circle", "square", "triangle", "cross"]
    (data / "shapes.yaml").write_text(
        yaml.safe_dump({"path": str(shapes), "train": "images/train", "val": "images/val", "nc": 4, "names": names})
    )
    shutil.copytree(RACCOON, data / "raccoon", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.cache"))
    raccoon = {"path": str(data / "raccoon"), "train": "images/val", "val": "images/val", "nc": 1, "names": ["raccoon"]}
    (data / "raccoon.yaml").write_text(yaml.safe_dump(raccoon))
    return data / "shapes.yaml", data / "raccoon.yaml"


def child_cmd(kind, **kwargs):
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-args", json.dumps(kwargs)]


def cfg_of(variant):
    return "yolov5n.yaml" if variant == "plain" else f"yolov5n_{variant}.yaml"


def plan(opt, out, shapes, raccoon):
    """The checks to run, in three groups: parallel trainings, parallel validations, then one at a time."""
    s, runs = settings(opt), out / "runs"
    workers = max(1, (os.cpu_count() or 1) // opt.jobs // 2) if opt.cuda else 0
    trains, vals = [], []
    for v in opt.variants if {"train", "val"} & set(opt.checks) else []:
        args = ["--data", str(shapes), "--cfg", cfg_of(v), "--weights", "", "--img", str(s["img"]), "--epochs", "1"]
        args += ["--batch-size", str(s["batch"]), "--device", opt.device, "--workers", str(workers)]
        args += ["--project", str(runs), "--name", v, "--exist-ok", "--no-tensorboard"]
        t = Check(f"train AMP {v}" if opt.cuda else f"train {v}", child_cmd("train", args=args), s["train_s"])
        trains.append(t)
        if "val" in opt.checks:
            best, project = runs / v / "weights" / "best.pt", str(runs / "val")
            cmd = child_cmd(
                "val", data=str(shapes), weights=str(best), imgsz=s["img"], device=opt.device, project=project
            )
            vals.append(Check(f"val --half {v}", cmd, s["val_s"]))
            t.after.append(vals[-1])
    serial = []
    if "autobatch" in opt.checks:
        serial.append(Check("AutoBatch", child_cmd("autobatch", imgsz=320, device=opt.device), 300))
    if "cuda-tests" in opt.checks:
        serial.append(Check("pytest -m cuda", cuda_tests_cmd(), 300))
    if "speed" in opt.checks:
        serial.append(Check(f"speed.py rows ({'CUDA' if opt.cuda else 'CPU'})", speed_cmd(opt, raccoon), s["speed_s"]))
    return trains, vals, serial


def cuda_tests_cmd():
    """pytest -m cuda over the test files that mark a test cuda (collecting every test file takes long)."""
    files = sorted(str(f) for f in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in f.read_text())
    return [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs", *files]


def speed_cmd(opt, raccoon):
    s = settings(opt)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--weights", str(REFERENCE_WEIGHTS)]
    cmd += ["--data", str(raccoon), "--img", str(s["img"]), "--device", opt.device, "--repeats", "1"]
    cmd += ["--warmup", "0" if opt.quick else "1", "--whole-epochs", "1" if opt.quick else "3"]
    if opt.quick:
        cmd += ["--batch-size", "4", "--val-batch-size", "4", "--workers", "0"]
    return cmd


def run_check(check, logs, deadline):
    """Run one check's subprocess (bounded by its timeout and the budget); fill in its result row."""
    left = deadline - time.monotonic()
    if left < 10:
        check.result, check.detail = "fail", "not run: the --budget was spent"
        return check
    log = logs / (re.sub(r"[^\w.-]+", "_", check.name) + ".log")
    t0 = time.monotonic()
    try:
        p = subprocess.run(check.cmd, cwd=ROOT, capture_output=True, text=True, timeout=min(check.timeout, left))
        output, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        output, rc = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {e.timeout:.0f} s", "timeout"
    check.seconds = time.monotonic() - t0
    log.write_text(output if isinstance(output, str) else output.decode(errors="replace"))
    check.result = "pass" if rc == 0 else "fail"
    check.detail, check.peak_mb = summarise(check, str(output), rc)
    return check


def summarise(check, output, rc):
    """(detail, peak MiB) of a finished check from its output."""
    lines = output.strip().splitlines()
    found = [json.loads(ln[len(RESULT) :]) for ln in lines if ln.startswith(RESULT)]
    if rc != 0:
        return f"exit {rc}: {(lines or ['(no output)'])[-1][:200]}", found[-1]["peak_mb"] if found else None
    if found:
        return found[-1]["detail"], found[-1]["peak_mb"]
    if check.name.startswith("pytest"):
        return (lines or [""])[-1].strip("= "), None
    rows = [ln for ln in lines if ln.startswith("| ") and any(k in ln for k in SPEED_ROWS)]
    return "; ".join(" ".join(c.strip() for c in r.strip("|").split("|")) for r in rows), None


def run_all(trains, vals, serial, opt, logs):
    """Trainings, then validations (of those whose training passed), --jobs at a time; then the rest in turn."""
    deadline = time.monotonic() + opt.budget
    with ThreadPoolExecutor(opt.jobs) as pool:
        list(pool.map(lambda c: run_check(c, logs, deadline), trains))
        ready = [v for t in trains if t.passed for v in t.after]
        for t in trains:
            for v in t.after:
                if not t.passed:
                    v.result, v.detail = "fail", f"not run: {t.name} failed"
        list(pool.map(lambda c: run_check(c, logs, deadline), ready))
    for c in serial:
        run_check(c, logs, deadline)
    return [*trains, *(v for t in trains for v in t.after), *serial]


def header(opt, started):
    """Lines naming the machine and the run above the table."""
    import torch

    from benchmarks.speed import machine

    gpu = f"CUDA {torch.version.cuda}" if torch.cuda.is_available() else "no CUDA device"
    mode = "--quick: tiny images, data and epochs" if opt.quick else "img 320, 1 epoch, batch 16"
    return [
        f"# benchmarks/gpu_check.py --device {opt.device}{' --quick' if opt.quick else ''}",
        "",
        f"{machine(opt.device)}; torch {torch.__version__}, {gpu}; Python {platform.python_version()}",
        f"{mode}; {len(opt.variants)} models; {opt.jobs} at a time; {time.time() - started:.0f} s in all",
        "peak memory: the process's peak of allocated CUDA memory on a GPU, its peak RSS on CPU",
        "",
    ]


def table(checks):
    rows = ["| check | result | time (s) | peak memory (MiB) | detail |", "| --- | --- | --- | --- | --- |"]
    for c in checks:
        mem = "-" if c.peak_mb is None else f"{c.peak_mb:.0f}"
        rows.append(f"| {c.name} | {c.result} | {c.seconds:.1f} | {mem} | {c.detail.replace('|', '/')} |")
    return rows


def main(argv=None):
    opt = parse_opt(argv)
    if opt.child:
        return child(opt.child, json.loads(opt.child_args))
    started, out = time.time(), Path(opt.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if opt.cuda and not _cuda_available():
        print(f"gpu_check.py: no CUDA device for --device {opt.device}; use --device cpu --quick for the CPU path")
        return 1
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:  # data, runs and weights: not kept in out
        shapes, raccoon = prepare_data(Path(work), settings(opt))
        checks = run_all(*plan(opt, Path(work), shapes, raccoon), opt, logs)
    text = "\n".join([*header(opt, started), *table(checks)]) + "\n"
    (out / "gpu_check.md").write_text(text)
    print(text + f"\nwritten to {out / 'gpu_check.md'}")
    return 0 if checks and all(c.passed for c in checks) else 1


def _cuda_available():
    import torch

    return torch.cuda.is_available()


def child(kind, kwargs):
    """Run one check in this (sub)process; print its result line; exit code 1 on failure."""
    import torch

    try:
        detail = {"train": child_train, "val": child_val, "autobatch": child_autobatch}[kind](**kwargs)
        rc = 0
    except Exception as e:  # any failure of the checked code is this row's result
        traceback.print_exc()
        detail, rc = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", 1
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(RESULT + json.dumps({"detail": detail, "peak_mb": peak}), flush=True)
    return rc


def child_train(args):
    """train.py with args; fails unless every results.csv value of its epoch is finite."""
    import numpy as np

    import train

    opt = train.parse_opt(args)
    train.main(opt)
    rows = (Path(opt.save_dir) / "results.csv").read_text().splitlines()
    keys, values = [k.strip() for k in rows[0].split(",")], [float(x) for x in rows[-1].split(",")]
    if not np.isfinite(values).all():
        raise ValueError(f"non-finite results.csv values: {dict(zip(keys, values))}")
    last = dict(zip(keys, values))
    return f"box loss {last['train/box_loss']:.4f}, mAP@.5:.95 {last['metrics/mAP_0.5:0.95']:.4f}"


def child_val(data, weights, imgsz, device, project):
    """val.py --half on weights."""
    import val

    name = Path(weights).parent.parent.name
    kw = {"imgsz": imgsz, "device": device, "half": True, "plots": False, "project": project, "name": name}
    (p, r, map50, map_, *_), _, t = val.run(data, weights, exist_ok=True, **kw)
    return f"mAP@.5 {map50:.4f}, mAP@.5:.95 {map_:.4f}, inference {t[1]:.2f} ms/img"


def child_autobatch(imgsz, device):
    """AutoBatch's batch size for a yolov5n with the shapes classes."""
    from models.yolo import Model
    from utils.autobatch import check_train_batch_size
    from utils.torch_utils import select_device

    model = Model("yolov5n.yaml", nc=4).to(select_device(device))
    return f"batch size {check_train_batch_size(model, imgsz)}"


if __name__ == "__main__":
    sys.exit(main())
