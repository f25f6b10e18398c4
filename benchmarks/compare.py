"""Compare attention variants with their baseline: params, GFLOPs, latency, peak forward memory and trained mAP.

Usage:
    python benchmarks/compare.py --cfg models/yolov5_*.yaml --scale s --img 640
    python benchmarks/compare.py --cfg 'models/yolov5_S*.yaml' --scale n --img 320 --repeats 3 --out /tmp/cmp

Rows: the base yolov5<scale>.yaml (labelled baseline) first, then yolov5<scale>_<Name>.yaml for every
yolov5_<Name>.yaml given (glob patterns are expanded here too). All figures are for batch 1 at --img x --img.
- GFLOPs (v6.1): thop-style module-hook count (utils.torch_utils.legacy_gflops), blind to functional ops.
- GFLOPs (exact): torch.utils.flop_counter count of every op (utils.torch_utils.exact_flops / 1e9).
- latency: median of --repeats timed forwards of the BN-fused eval model under torch.no_grad, after 1 warm-up;
  the models are timed in turn, one forward each per round, so that drift during the run hits all alike.
- peak memory: the largest sum of live tensor bytes allocated during one forward (the warm-up), replayed in time
  order from torch.profiler's allocation events (profile_memory=True); weights, the input and memory that bypasses
  torch's allocator are not counted. On CUDA: torch.cuda.max_memory_allocated over the forward minus the start.
- mAP@.5, mAP@.5:.95: the best epoch (fitness = 0.1 mAP@.5 + 0.9 mAP@.5:.95) of <runs>/*/results.csv among runs
  whose opt.yaml cfg resolves to the same yaml with the same depth/width multiples; empty when no run matches.
Writes compare.md, compare.csv and compare.png (exact GFLOPs vs latency) into --out. On a CPU shared with other
work, pass --threads (1, or the number of idle cores): oversubscribed OpenMP threads make latency meaningless.
"""

import argparse
import csv
import glob
import logging
import os
import re
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's C++ side logs a GPU-count error on CPU-only machines
import numpy as np
import torch
import yaml
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.config import SCALES, load_model_yaml, resolve_cfg
from models.yolo import Model
from utils.general import LOGGER
from utils.metrics import fitness
from utils.torch_utils import exact_flops, legacy_gflops

COLUMNS = [
    "variant",
    "cfg",
    "params",
    "GFLOPs (v6.1)",
    "GFLOPs (exact)",
    "latency (ms)",
    "peak memory (MB)",
    "mAP@.5",
    "mAP@.5:.95",
]
VARIANT_NAME = re.compile(r"yolov5_(.+)\.ya?ml")


def parse_opt(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", nargs="+", required=True, help="variant yamls yolov5_<Name>.yaml (paths or glob patterns)")
    p.add_argument("--scale", choices=list(SCALES), default="s", help="model size letter applied to every variant")
    p.add_argument("--img", "--img-size", type=int, default=640, help="square input size (pixels)")
    p.add_argument("--runs", default=ROOT / "runs/train", help="training runs folder (for mAP)")
    p.add_argument("--out", default=ROOT / "benchmarks/results", help="folder for compare.md, compare.csv, compare.png")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per model (median reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default torch's; 1 on a busy shared CPU)")
    opt = p.parse_args(argv)
    if opt.repeats < 1 or (opt.threads is not None and opt.threads < 1):
        p.error(f"--repeats and --threads must be >= 1, got {opt.repeats} and {opt.threads}")
    if opt.img < 32 or opt.img % 32:
        p.error(f"--img must be a positive multiple of 32 (the largest stride), got {opt.img}")
    try:
        opt.device = torch.device(opt.device)
    except RuntimeError:
        p.error(f"--device must be cpu or cuda[:i], got '{opt.device}'")
    if opt.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda requested but CUDA is not available")
    return opt


def expand_cfgs(patterns):
    """Paths of the given yamls, glob patterns expanded, duplicates dropped, order kept."""
    paths = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise FileNotFoundError(f"compare.py: --cfg pattern '{pattern}' matches no file")
        paths += [f for f in found if f not in paths]
    return paths


def model_rows(cfgs, scale):
    """[(label, cfg)]: the yolov5<scale>.yaml baseline, then yolov5<scale>_<Name>.yaml per variant yaml."""
    rows = [("baseline", f"yolov5{scale}.yaml")]
    for cfg in cfgs:
        m = VARIANT_NAME.fullmatch(Path(cfg).name)
        if not m:
            raise ValueError(f"compare.py: --cfg {cfg}: expected a variant yaml named yolov5_<Name>.yaml")
        rows.append((m.group(1), str(Path(cfg).with_name(f"yolov5{scale}_{m.group(1)}.yaml"))))
    return rows


@contextmanager
def quiet_logging():
    """Raise the project LOGGER to WARNING for the block (model tables, fuse and summary lines)."""
    old = LOGGER.level
    LOGGER.setLevel(max(logging.WARNING, old))
    try:
        yield
    finally:
        LOGGER.setLevel(old)


def model_key(cfg):
    """(resolved yaml file, depth_multiple, width_multiple): what makes two cfg strings the same model."""
    path, _ = resolve_cfg(cfg)
    d, _ = load_model_yaml(cfg)
    return path.resolve(), float(d["depth_multiple"]), float(d["width_multiple"])


def best_epoch(results_csv):
    """(mAP@.5, mAP@.5:.95, fitness) of the best-fitness row of a results.csv, None when it has no rows."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    cols = ["metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]
    try:
        x = np.array([[float(r[c]) for c in cols] for r in rows], dtype=float).reshape(-1, 4)
    except (KeyError, ValueError) as e:
        raise ValueError(f"compare.py: {results_csv} is not a v6.1 results.csv ({e})") from e
    if not len(x):
        return None
    fi = fitness(x)
    i = int(fi.argmax())
    return x[i, 2], x[i, 3], fi[i]


def trained_maps(runs_dir, imgsz=None):
    """{model_key: (mAP@.5, mAP@.5:.95)} of the best run per model found under runs_dir (*/opt.yaml + results.csv);
    with imgsz, runs trained at another image size are left out (their mAP is not comparable)."""
    best = {}
    for opt_yaml in sorted(Path(runs_dir).glob("*/opt.yaml")):
        results = opt_yaml.with_name("results.csv")
        with open(opt_yaml, errors="ignore") as f:
            run_opt = yaml.safe_load(f)
        cfg = run_opt.get("cfg") if isinstance(run_opt, dict) else None
        if not cfg or not results.is_file() or (imgsz and run_opt.get("imgsz", imgsz) != imgsz):
            continue
        try:
            key, row = model_key(cfg), best_epoch(results)
        except (FileNotFoundError, ValueError) as e:
            LOGGER.warning(f"WARNING: compare.py: run {opt_yaml.parent} skipped: {e}")
            continue
        if row and (key not in best or row[2] > best[key][2]):
            best[key] = row
    return {k: v[:2] for k, v in best.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profiled_peak_mb(model, x):
    """Run one forward; return the peak of live tensor bytes it allocated (MB), from the profiler's event tree."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    allocs = []
    nodes = list(prof.profiler.kineto_results.experimental_event_tree())
    while nodes:
        n = nodes.pop()
        if n.tag == _EventType.Allocation:
            allocs.append((n.start_time_ns, n.extra_fields.alloc_size))  # frees have negative sizes
        nodes += n.children
    live = peak = 0
    for _, size in sorted(allocs):
        live += size
        peak = max(peak, live)
    return peak / 1e6


def cuda_peak_mb(model, x):
    """Run one forward; return the peak CUDA memory it allocated above the starting level (MB)."""
    torch.cuda.synchronize(x.device)
    start = torch.cuda.memory_allocated(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    model(x)
    torch.cuda.synchronize(x.device)
    return (torch.cuda.max_memory_allocated(x.device) - start) / 1e6


def measure(label, cfg, opt, device, maps):
    """(row dict keyed by COLUMNS, latency still empty; the BN-fused eval model to time) for model cfg."""
    x = torch.zeros(1, 3, opt.img, opt.img, device=device)
    with quiet_logging():
        model = Model(cfg)
        row = {
            "variant": label,
            "cfg": Path(cfg).name,
            "params": sum(p.numel() for p in model.parameters()),
            "GFLOPs (v6.1)": legacy_gflops(model, opt.img),
            "GFLOPs (exact)": exact_flops(model, opt.img) / 1e9,
        }
        with torch.no_grad():  # fusing under no_grad keeps the folded weights leaf tensors
            fused = model.to(device).fuse().eval()
            row["peak memory (MB)"] = cuda_peak_mb(fused, x) if device.type == "cuda" else profiled_peak_mb(fused, x)
    row["mAP@.5"], row["mAP@.5:.95"] = maps.get(model_key(cfg), (None, None))
    return row, fused


def interleaved_latency(models, img, repeats, device):
    """Median ms of batch-1 forwards per model, timing the models in turn each round so that drift over the run
    (clock speed, caches, allocator) falls on all of them alike; the memory forward served as warm-up."""
    x = torch.zeros(1, 3, img, img, device=device)
    times = [[] for _ in models]
    with torch.no_grad():
        for _ in range(repeats):
            for i, m in enumerate(models):
                _sync(device)
                t = time.perf_counter()
                m(x)
                _sync(device)
                times[i].append(time.perf_counter() - t)
    return [statistics.median(t) * 1e3 for t in times]


def _cell(v, fmt):
    if v is None:
        return ""
    return format(v, fmt) if isinstance(v, float) else str(v)


def markdown_table(rows):
    """The rows as a markdown table (GFLOPs to 0.001, ms and MB to 0.1, mAP to 0.001)."""
    fmts = {
        "GFLOPs (v6.1)": ".3f",
        "GFLOPs (exact)": ".3f",
        "latency (ms)": ".1f",
        "peak memory (MB)": ".1f",
        "mAP@.5": ".3f",
        "mAP@.5:.95": ".3f",
    }
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[k], fmts.get(k, ".4g")) for k in COLUMNS) + " |")
    return "\n".join(lines)


def write_csv(rows, path):
    """compare.csv: one row per model, COLUMNS as header, floats to 6 significant digits, empty for no value."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_cell(r[k], ".6g") for k in COLUMNS])


def plot(rows, path, title):
    """compare.png: exact GFLOPs against latency, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), tight_layout=True)
    for r in rows:
        x, y = r["GFLOPs (exact)"], r["latency (ms)"]
        ax.scatter(x, y, color="tab:red" if r["variant"] == "baseline" else "tab:blue")
        ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("GFLOPs (exact, batch 1)")
    ax.set_ylabel("latency (ms, median)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def run(opt):
    """Measure every model, write the three files; return the markdown table."""
    device = opt.device
    if opt.threads:
        torch.set_num_threads(opt.threads)
    rows_in = model_rows(expand_cfgs(opt.cfg), opt.scale)
    maps = trained_maps(opt.runs, opt.img)
    measured = []
    for label, cfg in rows_in:
        try:
            measured.append(measure(label, cfg, opt, device, maps))
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            LOGGER.warning(f"WARNING: compare.py: {cfg} skipped: {e}")
    rows = [row for row, _ in measured]
    for row, ms in zip(rows, interleaved_latency([m for _, m in measured], opt.img, opt.repeats, device)):
        row["latency (ms)"] = ms
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    title = f"yolov5{opt.scale} variants, {opt.img}x{opt.img}, batch 1, {device.type}"
    (out / "compare.md").write_text(
        f"{title}, torch {torch.__version__}, {torch.get_num_threads()} threads\n\n{table}\n"
    )
    write_csv(rows, out / "compare.csv")
    plot(rows, out / "compare.png", title)
    return table


def main(argv=None):
    opt = parse_opt(argv)
    try:
        table = run(opt)
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    print(table)
    LOGGER.info(f"Results saved to {opt.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
