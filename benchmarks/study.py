"""Multi-seed variant study: every variant x seed trained by train.py in its own process, then mean +- std, the
paired difference against the plain model with a 95% t interval, params, exact GFLOPs, latency and a plot.

Usage:
    python benchmarks/study.py --data data/shapes.yaml --cfg 'models/yolov5_*.yaml' --scale n --img 128 \\
        --epochs 30 --seeds 0 1 2 --out benchmarks/results/study_shapes
    python benchmarks/study.py --data data/raccoon.yaml --cfg 'models/yolov5_*.yaml' --scale n \\
        --weights tests/data/reference/raccoon_yolov5n_best.pt --img 320 --epochs 1 \\
        --out benchmarks/results/study_raccoon

- Runs: <runs>/<variant>_seed<s> (logs in <runs>/logs), trained with `python train.py ... --seed s`: one seed
  gives every variant the same batch order and the same augmentation of every sample (train.py keys them to
  (seed, epoch, index)).
  With --weights, each variant gets the checkpoint's tensors by structural transfer (--weights + --cfg).
- Resumable: a finished run (stripped last.pt) is skipped, an interrupted one continues with `train.py --resume`
  (bit-identical to an uninterrupted run on CPU), a run folder without a checkpoint is started again. A run folder
  trained with other settings is an error, so a table never mixes settings.
- mAP of a run: its best epoch by fitness (0.1 mAP@.5 + 0.9 mAP@.5:.95) in results.csv, the epoch best.pt holds.
- Table: mean +- sample std over seeds; the difference to the plain model of the same seed, averaged, with a 95%
  Student-t interval over seeds (n - 1 degrees of freedom); '*' marks an interval that, printed to 3 decimals,
  excludes 0.
  params, exact GFLOPs and latency (batch 1 at --img, fused model, median of --repeats) as in compare.py.
- Device: --device '' trains on CUDA when available (then with --deterministic) and times latency there.
Writes study.md, study.csv, runs.csv (one row per run) and study.png into --out.
"""

import argparse
import csv
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train
from benchmarks.compare import best_epoch, expand_cfgs, interleaved_latency, measure, model_rows, quiet_logging
from models.config import SCALES
from models.loading import load_checkpoint
from utils.general import LOGGER, check_file

METRICS = {"mAP@.5": 0, "mAP@.5:.95": 1}  # name: index in a run's (mAP@.5, mAP@.5:.95)
RUN_KEYS = ("data", "cfg", "weights", "imgsz", "epochs", "batch_size", "seed", "hyp")  # must match to reuse a run


def parse_opt(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument(
        "--cfg",
        nargs="*",
        default=[],
        help="variant yamls yolov5_<Name>.yaml (paths or globs); none: the plain model's seed spread",
    )
    p.add_argument("--scale", choices=list(SCALES), default="n", help="model size letter applied to every variant")
    p.add_argument("--weights", default="", help="pretrained checkpoint transferred into every variant ('' scratch)")
    p.add_argument("--hyp", default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"), help="hyperparameters yaml")
    p.add_argument("--img", type=int, default=320, help="train, val and latency image size (pixels)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (paired across variants)")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers per training (results do not change)")
    p.add_argument("--device", default="", help="'' (CUDA when available), cpu or a CUDA index")
    p.add_argument("--train-args", default="", help="extra train.py flags as one string: --train-args='--patience 0'")
    p.add_argument("--out", required=True, help="folder for study.md, study.csv, runs.csv and study.png")
    p.add_argument("--runs", help="folder for the trainings and their logs (default runs/study/<name of --out>)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per model for latency (median)")
    p.add_argument("--threads", type=int, help="torch threads for latency (default torch's)")
    opt = p.parse_args(argv)
    if min(opt.epochs, opt.batch_size, opt.repeats) < 1 or len(set(opt.seeds)) != len(opt.seeds):
        p.error("--epochs, --batch-size and --repeats must be >= 1 and --seeds distinct")
    if opt.img < 32 or opt.img % 32:
        p.error(f"--img must be a positive multiple of 32 (the largest stride), got {opt.img}")
    opt.command = "python benchmarks/study.py " + shlex.join(argv)
    opt.runs = Path(opt.runs or ROOT / "runs" / "study" / Path(opt.out).resolve().name)
    return opt


def absolute_paths(opt):
    """Files as absolute paths (trainings run with the project root as their folder); clear error if missing."""
    opt.data, opt.hyp = (str(Path(check_file(f)).resolve()) for f in (opt.data, opt.hyp))
    if opt.weights:
        if not Path(opt.weights).is_file():
            raise FileNotFoundError(f"study.py: --weights {opt.weights} not found")
        opt.weights = str(Path(opt.weights).resolve())
    return [str(Path(c).resolve()) for c in expand_cfgs(opt.cfg)]


def use_cuda(device):
    """True when trainings and latency run on CUDA."""
    return str(device).lower() != "cpu" and torch.cuda.is_available()


def train_command(opt, cfg, seed, run_dir):
    """The train.py command line of one run (a fresh start)."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--data",
        str(opt.data),
        "--cfg",
        cfg,
        "--weights",
        opt.weights,
        "--hyp",
        str(opt.hyp),
        "--img",
        str(opt.img),
        "--epochs",
        str(opt.epochs),
        "--batch-size",
        str(opt.batch_size),
        "--seed",
        str(seed),
        "--workers",
        str(opt.workers),
        "--device",
        opt.device,
        "--project",
        str(run_dir.parent),
        "--name",
        run_dir.name,
        "--exist-ok",
        *shlex.split(opt.train_args),
    ]
    return cmd + ["--deterministic"] if use_cuda(opt.device) else cmd


def run_state(run_dir):
    """'done' (stripped final last.pt), 'interrupted' (a training last.pt) or 'new'."""
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        return "new"
    return "done" if load_checkpoint(last)["epoch"] == -1 else "interrupted"


def check_same_settings(run_dir, cmd):
    """Refuse to reuse a run folder whose opt.yaml was trained with other settings than cmd."""
    with open(run_dir / "opt.yaml", errors="ignore") as f:
        saved = yaml.safe_load(f) or {}
    wanted = vars(train.parse_opt(cmd[2:]))
    diff = [k for k in RUN_KEYS if str(saved.get(k)) != str(wanted[k])]
    if diff:
        raise ValueError(
            f"study.py: {run_dir} was trained with other settings ({', '.join(diff)}: "
            f"{[saved.get(k) for k in diff]} vs {[wanted[k] for k in diff]}); use another --out"
        )


def run_one(opt, cfg, seed, run_dir):
    """Train (or resume, or skip) one run in its own process; returns the state it was found in."""
    state = run_state(run_dir)
    cmd = train_command(opt, cfg, seed, run_dir)
    if state != "new":
        check_same_settings(run_dir, cmd)
    if state == "done":
        return state
    if state == "interrupted":
        cmd = [sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir / "weights" / "last.pt")]
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # started but no epoch saved: start again
    log = run_dir.parent / "logs" / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"study.py: training {run_dir.name} failed (exit {code}), see {log}")
    return state


def train_all(opt, rows):
    """Train every (variant, seed), seeds outermost; returns {(variant, seed): (mAP@.5, mAP@.5:.95)}."""
    runs, todo, t0 = {}, [(seed, label, cfg) for seed in opt.seeds for label, cfg in rows], time.time()
    for i, (seed, label, cfg) in enumerate(todo, 1):
        run_dir = opt.runs / f"{label}_seed{seed}"
        t = time.time()
        state = run_one(opt, cfg, seed, run_dir)
        verb = "already done" if state == "done" else "resumed" if state == "interrupted" else "trained"
        LOGGER.info(
            f"study: [{i}/{len(todo)}] {label} seed {seed} {verb} in {time.time() - t:.0f} s "
            f"({(time.time() - t0) / 60:.1f} min in all)"
        )
        found = best_epoch(run_dir / "results.csv")
        if found is None:
            raise ValueError(f"study.py: {run_dir / 'results.csv'} has no epochs")
        runs[label, seed] = found[:2]
    return runs


def mean_std(x):
    """Mean and sample standard deviation (0 for a single value)."""
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def paired_interval(a, b, confidence=0.95):
    """Mean of the paired differences a - b and its Student-t confidence interval (nan bounds for one pair)."""
    from scipy.stats import t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, n = float(d.mean()), len(d)
    if n < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(rows, runs, seeds):
    """One dict per variant: mean, std, paired difference to the baseline and its interval per metric."""
    base = rows[0][0]
    table = []
    for label, cfg in rows:
        r = {"variant": label, "cfg": Path(cfg).name, "seeds": len(seeds)}
        for name, k in METRICS.items():
            values = [runs[label, s][k] for s in seeds]
            r[f"{name} mean"], r[f"{name} std"] = mean_std(values)
            diff = paired_interval(values, [runs[base, s][k] for s in seeds])
            r[f"{name} diff"], r[f"{name} lo"], r[f"{name} hi"] = diff if label != base else (0.0, 0.0, 0.0)
        table.append(r)
    return table


def add_costs(table, rows, opt):
    """params, exact GFLOPs and latency (batch 1 at --img) of every model, measured as compare.py does."""
    device = torch.device("cuda:0" if use_cuda(opt.device) else "cpu")
    if opt.threads:
        torch.set_num_threads(opt.threads)
    with quiet_logging():
        measured = [measure(label, cfg, SimpleNamespace(img=opt.img), device, {}) for label, cfg in rows]
    latency = interleaved_latency([m for _, m in measured], opt.img, opt.repeats, device)
    for r, (m, _), ms in zip(table, measured, latency):
        r["params"], r["GFLOPs (exact)"], r["latency (ms)"] = m["params"], m["GFLOPs (exact)"], ms
    return device


def _diff_cell(r, name):
    d, lo, hi = r[f"{name} diff"], r[f"{name} lo"], r[f"{name} hi"]
    if r["variant"] == "baseline":
        return ""
    if math.isnan(lo):
        return f"{d:+.3f}"
    lo, hi = round(lo, 3), round(hi, 3)  # '*' only where the printed interval excludes 0, not a 1e-4 offset
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}"


def markdown_table(table):
    """The study table: costs, mean +- std per metric, paired difference [95% interval] ('*': excludes 0)."""
    head = [
        "variant",
        "cfg",
        "params",
        "GFLOPs (exact)",
        "latency (ms)",
        "mAP@.5",
        "vs plain (95% CI)",
        "mAP@.5:.95",
        "vs plain (95% CI)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in table:
        cells = [r["variant"], r["cfg"], str(r["params"]), f"{r['GFLOPs (exact)']:.3f}", f"{r['latency (ms)']:.1f}"]
        for name in METRICS:
            cells += [f"{r[f'{name} mean']:.3f} ± {r[f'{name} std']:.3f}", _diff_cell(r, name)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csvs(table, runs, out):
    """study.csv (one row per variant, every number) and runs.csv (one row per run)."""
    with open(out / "study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows({k: format(v, ".6g") if isinstance(v, float) else v for k, v in r.items()} for r in table)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", *METRICS])
        w.writerows([label, seed, f"{m50:.6g}", f"{m:.6g}"] for (label, seed), (m50, m) in runs.items())


def plot(table, path, title):
    """study.png: each mAP (mean +- std over seeds) against exact GFLOPs and against latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), tight_layout=True)
    for row, name in zip(axes, METRICS):
        for ax, xkey in zip(row, ("GFLOPs (exact)", "latency (ms)")):
            for r in table:
                color = "tab:red" if r["variant"] == "baseline" else "tab:blue"
                ax.errorbar(r[xkey], r[f"{name} mean"], yerr=r[f"{name} std"], fmt="o", color=color, capsize=3)
                ax.annotate(
                    r["variant"], (r[xkey], r[f"{name} mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
            ax.set_xlabel(f"{xkey}, batch 1")
            ax.set_ylabel(f"{name} (mean ± std over seeds)")
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def run(opt):
    """Train what is missing, then measure and write the four files; returns the markdown table."""
    rows = model_rows(absolute_paths(opt), opt.scale)
    runs = train_all(opt, rows)
    table = summarise(rows, runs, opt.seeds)
    device = add_costs(table, rows, opt)
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    init = f"from {Path(opt.weights).name} (structural transfer)" if opt.weights else "from scratch"
    title = (
        f"yolov5{opt.scale} variants on {Path(opt.data).stem}, img {opt.img}, {opt.epochs} epochs {init}, "
        f"seeds {' '.join(map(str, opt.seeds))}; latency on {device.type}"
    )
    table_md = markdown_table(table)
    (out / "study.md").write_text(
        f"{title}, torch {torch.__version__}, {torch.get_num_threads()} threads\n\n{table_md}\n\n`{opt.command}`\n"
    )
    write_csvs(table, runs, out)
    plot(table, out / "study.png", title)
    return table_md


def main(argv=None):
    opt = parse_opt(sys.argv[1:] if argv is None else argv)
    try:
        table = run(opt)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    print(table)
    LOGGER.info(f"Results saved to {opt.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
