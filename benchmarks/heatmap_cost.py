"""What detect.py --heatmap adds per image: detection time against heatmap time, on the same images.

Usage:
    python benchmarks/heatmap_cost.py --weights W.pt --source DIR [--img 640] [--threads 1] [--method EigenCAM]

Per image, as detect.py runs it at batch 1: detection = pre-process + forward + NMS; heatmap = what --heatmap adds
(utils.heatmaps.Heatmaps.save: its own forward, the CAM, the mapping to the original pixels and writing the .npy and
the .jpg, into a temporary folder). Both are timed on every image in turn, --repeats times after one untimed pass;
the figures are medians over images x repeats, and the ratio is heatmap / detection.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.heatmaps import images
from models.backends import DetectMultiBackend
from utils.augmentations import letterbox
from utils.general import LOGGER, check_img_size, non_max_suppression, scale_coords
from utils.heatmaps import Heatmaps
from utils.sources import imread, to_chw_rgb


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a .pt model")
    p.add_argument("--source", required=True, help="image file, dir, glob or .txt list of paths")
    p.add_argument("--img", "--imgsz", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--method", default="EigenCAM", help="grad-cam method (utils.heatmaps.SUPPORTED)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default torch's)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    return p.parse_args(argv)


def detection(model, im0, imgsz):
    """detect.py's per-image work: letterbox, to tensor, forward, NMS, boxes to im0; (input, det)."""
    x = torch.from_numpy(to_chw_rgb(letterbox(im0, imgsz, stride=model.stride)[0]))[None].float() / 255
    det = non_max_suppression(model(x)[0], 0.25, 0.45)[0]
    det[:, :4] = scale_coords(x.shape[2:], det[:, :4], im0.shape).round()
    return x, det


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def measure(opt):
    """{'detection': ms, 'heatmap': ms} medians per image, and the image count."""
    if opt.threads:
        torch.set_num_threads(opt.threads)
    model = DetectMultiBackend(opt.weights)
    heatmaps, imgsz = Heatmaps(model, method=opt.method), check_img_size(opt.img, model.stride)
    ims = [im for im in map(imread, images(opt.source)) if im is not None]
    times = {"detection": [], "heatmap": []}
    with tempfile.TemporaryDirectory() as out, torch.no_grad():
        for r in range(opt.repeats + 1):
            for im0 in ims:
                (x, det), t_det = timed(detection, model, im0, imgsz)
                _, t_heat = timed(heatmaps.save, out, x, 0, det, "image.jpg", im0)
                if r:  # the first pass warms up
                    times["detection"].append(t_det)
                    times["heatmap"].append(t_heat)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}, len(ims)


def main(argv=None):
    opt = parse_opt(argv)
    try:
        ms, n = measure(opt)
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    LOGGER.info(
        f"{n} images at --img {opt.img}, {torch.get_num_threads()} threads, {opt.method}: "
        f"detection {ms['detection']:.1f} ms, heatmap {ms['heatmap']:.1f} ms per image "
        f"(median): --heatmap adds {ms['heatmap'] / ms['detection']:.2f}x the detection time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
