"""This project against an install of YOLOv5 v6.1 on the same machine, the runs alternated.

Usage:
    python benchmarks/vs_v61.py --v61 <v6.1 checkout> --weights W.pt --data data/raccoon.yaml      # a v6.1 checkout
    python benchmarks/vs_v61.py --v61 yolov5 --v61-python /venv39/bin/python ...                 # a packaged v6.1

Two figures, each the median of --repeats timed runs per side after --warmup untimed ones, the sides alternated
(ours first in even rounds, v6.1 first in odd ones) so that drift of the machine falls on both:
- whole: the fine-tune `train.py --data D --weights W --cfg C --img I --epochs E --batch-size B` as a user runs it,
  wall-clock and CPU seconds and its phases (as benchmarks/speed.py's whole phase reads them from the log lines),
  and the mAP of each side's run (best epoch of its results.csv).
- val: `val.py --data D --weights W --img --val-img --batch-size --val-batch-size`: inference ms/image from its
  `Speed:` line, and the process's wall-clock seconds.
Each side reads its own copy of the dataset (so neither reads the other's label cache) with --hyp's values.
--v61 is a folder holding v6.1's train.py and val.py, or the name of a package that holds them as modules
(`yolov5`, the PyPI packaging of v6.1, run as `python -m yolov5.train`); --v61-python runs it.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.compare import best_epoch
from benchmarks.speed import SPEED_LINE, machine, timed_process, whole_phases

SIDES = ("ours", "v6.1")


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--v61", required=True, help="v6.1 checkout folder, or the package name of a packaged v6.1")
    p.add_argument("--v61-python", default=sys.executable, help="Python interpreter that runs v6.1")
    p.add_argument("--weights", required=True, help="initial training weights and the val.py model (v6.1 .pt)")
    p.add_argument("--data", default="data/raccoon.yaml", help="dataset yaml (its images are copied per side)")
    p.add_argument("--cfg", default="yolov5n.yaml", help="model yaml for training")
    p.add_argument("--hyp", default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"), help="hyperparameters yaml")
    p.add_argument("--img", type=int, default=320, help="training image size")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the fine-tune")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--val-img", type=int, default=640, help="val.py image size")
    p.add_argument("--val-batch-size", type=int, default=32, help="val.py batch size")
    p.add_argument("--phases", nargs="+", choices=("whole", "val"), default=["whole", "val"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and phase")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side and phase first")
    p.add_argument("--save", help="write the figures to this JSON file")
    opt = p.parse_args(argv)
    for name in ("weights", "data", "hyp"):
        if not Path(getattr(opt, name)).is_file():
            p.error(f"--{name} {getattr(opt, name)}: file not found")
    return opt


def v61_script(opt, name):
    """The argv prefix and working folder that run v6.1's train or val."""
    folder = Path(opt.v61)
    if folder.is_dir():
        if not (folder / f"{name}.py").is_file():
            sys.exit(f"vs_v61.py: --v61 {folder}: no {name}.py in it (not a YOLOv5 checkout)")
        return [opt.v61_python, "-u", str((folder / f"{name}.py").resolve())], folder.resolve()
    return [opt.v61_python, "-u", "-m", f"{opt.v61}.{name}"], None


def scripts(opt, name):
    """{side: (argv prefix, cwd)} for train or val."""
    return {"ours": ([sys.executable, "-u", str(ROOT / f"{name}.py")], ROOT), "v6.1": v61_script(opt, name)}


def copy_dataset(data, dest):
    """A copy of the dataset's folder under dest, and a yaml naming it by absolute path (no label caches)."""
    d = yaml.safe_load(Path(data).read_text())
    src = Path(d.get("path") or Path(data).parent)
    src = src if src.is_absolute() else (ROOT / src)
    shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns("*.cache"))
    d["path"] = str((dest / src.name).resolve())
    (dest / "data.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return str(dest / "data.yaml")


def whole_run(opt, prefix, cwd, data, out, name):
    """One fine-tune: its wall and CPU seconds, phases and best mAPs."""
    args = [*prefix, "--data", data, "--weights", opt.weights, "--cfg", opt.cfg, "--hyp", opt.hyp]
    args += ["--img", str(opt.img), "--epochs", str(opt.epochs), "--batch-size", str(opt.batch_size)]
    args += ["--device", "cpu", "--project", str(out), "--name", name]
    wall, cpu, lines = timed_process(args, cwd)
    m50, m, _ = best_epoch(out / name / "results.csv")
    times = {f"whole-process s ({opt.epochs} epochs)": wall, "whole-process CPU s": cpu, **whole_phases(wall, lines)}
    return {**times, "mAP@.5": float(m50), "mAP@.5:.95": float(m)}


def val_run(opt, prefix, cwd, data, out, name):
    """One val.py: inference ms/image from its Speed line, and its wall seconds."""
    args = [*prefix, "--data", data, "--weights", opt.weights, "--img", str(opt.val_img)]
    args += ["--batch-size", str(opt.val_batch_size), "--device", "cpu", "--project", str(out), "--name", name]
    wall, _, lines = timed_process(args, cwd)
    match = SPEED_LINE.search("\n".join(line for _, line in lines))
    if not match:
        raise RuntimeError(f"{name}: val.py printed no Speed line")
    key = f"val inference ms/img (img {opt.val_img}, batch {opt.val_batch_size})"
    return {key: float(match.group(2)), "val.py process s": wall}


def alternate(opt, phase, run, datas, tmp):
    """{side: [figures of each timed run]}, the sides alternated round by round."""
    prefixes, timed = scripts(opt, "train" if phase == "whole" else "val"), {s: [] for s in SIDES}
    for i in range(opt.warmup + opt.repeats):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            prefix, cwd = prefixes[side]
            figures = run(opt, prefix, cwd, datas[side], tmp / side, f"{phase}{i}")
            print(f"vs_v61: {phase} round {i} {side}: {json.dumps({k: round(v, 4) for k, v in figures.items()})}")
            if i >= opt.warmup:
                timed[side].append(figures)
    return {s: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for s, runs in timed.items()}


def table(figures):
    """Markdown: figure, ours, v6.1, ours/v6.1."""
    lines = ["| figure | ours | v6.1 | ours / v6.1 |", "| --- | --- | --- | --- |"]
    for key in figures["ours"]:
        a, b = figures["ours"][key], figures["v6.1"][key]
        lines.append(f"| {key} | {a:.4g} | {b:.4g} | {a / b:.2f} |" if b else f"| {key} | {a:.4g} | {b:.4g} | |")
    return "\n".join(lines)


def torch_version(python):
    out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main(argv=None):
    opt = parse_opt(argv)
    figures = {s: {} for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datas = {s: copy_dataset(opt.data, tmp / s) for s in SIDES}
        for phase in opt.phases:
            try:
                got = alternate(opt, phase, whole_run if phase == "whole" else val_run, datas, tmp)
            except RuntimeError as e:
                print(f"vs_v61.py: ERROR: {e}", file=sys.stderr)
                return 1
            for side in SIDES:
                figures[side].update(got[side])
    setup = {"machine": machine("cpu"), "torch": {"ours": torch_version(sys.executable)}, **vars(opt)}
    setup["torch"]["v6.1"] = torch_version(opt.v61_python)
    print(
        f"\n{setup['machine']}; torch ours {setup['torch']['ours']}, v6.1 {setup['torch']['v6.1']}; medians of "
        f"{opt.repeats} alternated runs\n"
    )
    print(table(figures))
    if opt.save:
        Path(opt.save).write_text(json.dumps({"setup": setup, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
