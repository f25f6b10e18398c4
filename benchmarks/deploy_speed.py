"""CPU latency of one model in every export format, through DetectMultiBackend (what detect.py and val.py run).

Usage: python benchmarks/deploy_speed.py --cfg yolov5n.yaml --img 640 --rounds 30 --threads 1

The formats are timed in turn, round after round (the first format of each round rotates), so that load from
other processes on a shared machine falls on all of them alike; the table gives each format's median.
Weights are random (latency does not depend on their values); pass --weights to time a trained checkpoint.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from export import run as export
from models.backends import DetectMultiBackend
from models.yolo import Model
from utils.checkpoints import save_checkpoint


def make_weights(cfg, weights, folder):
    """A checkpoint in folder: a copy of weights, or a random-init model of cfg saved as train.py saves it."""
    f = folder / (Path(weights).name if weights else f"{Path(cfg).stem}.pt")
    if weights:
        shutil.copy(weights, f)
    else:
        torch.manual_seed(0)
        save_checkpoint({"epoch": -1, "model": Model(cfg).half(), "ema": None}, f)
    return f


def time_in_turn(models, x, rounds, warmup):
    """{name: [ms per forward]} with the models run one after another in every round."""
    names = list(models)
    times = {n: [] for n in names}
    with torch.no_grad():
        for r in range(warmup + rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                t = time.perf_counter()
                models[n](x)
                if r >= warmup:
                    times[n].append((time.perf_counter() - t) * 1e3)
    return times


def main(opt):
    with tempfile.TemporaryDirectory() as tmp:
        pt = make_weights(opt.cfg, opt.weights, Path(tmp))
        files = export(weights=pt, include=opt.include, imgsz=opt.img)
        if opt.int8:
            files += export(weights=pt, include=["openvino"], imgsz=opt.img, int8=True, data=opt.data)
        torch.set_num_threads(opt.threads)
        models = {f.name: DetectMultiBackend(f, threads=opt.threads) for f in [pt, *files]}
        times = time_in_turn(models, torch.rand(1, 3, opt.img, opt.img), opt.rounds, opt.warmup)
    base = statistics.median(times[pt.name])
    print(f"\n{opt.rounds} rounds at {opt.img}x{opt.img}, batch 1, {opt.threads} CPU thread(s) per runtime\n")
    print("| file | backend | median ms | vs .pt |\n| --- | --- | --- | --- |")
    for name, t in times.items():
        print(f"| {name} | {models[name].format} | {statistics.median(t):.1f} | {statistics.median(t) / base:.2f}x |")


def parse_opt(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg", default="yolov5n.yaml", help="model yaml (random weights)")
    parser.add_argument("--weights", default="", help="a trained .pt instead of random weights")
    parser.add_argument("--img", type=int, default=640, help="square input size")
    parser.add_argument("--rounds", type=int, default=30, help="timed forwards per format")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime (same for all)")
    parser.add_argument("--include", nargs="+", default=["torchscript", "onnx", "openvino"], help="export formats")
    parser.add_argument("--int8", action="store_true", help="also time an INT8 OpenVINO model (calibrated on --data)")
    parser.add_argument("--data", default=str(ROOT / "data/coco128.yaml"), help="--int8 calibration dataset")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_opt())
