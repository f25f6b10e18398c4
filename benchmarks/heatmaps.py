"""Where several models look, side by side: one grid image per source image, one column per model.

Usage:
    python benchmarks/heatmaps.py --weights runs/train/base/weights/best.pt runs/train/SE/weights/best.pt \
        --source data/images --out runs/heatmaps [--img 640] [--method EigenCAM] [--layer 17 20 23]

Each column is one model's heat (utils.heatmaps: EigenCAM on the layers Detect reads unless --method/--layer say
otherwise) blended over the image at its own aspect, with that model's detections drawn, under the title
`<variant> | <weights file>`. Every column's heat is scaled to [0, 1] on its own (1: the hottest spot of that model
on that image) and coloured with the one JET scale drawn under the grid, so columns compare where, not how much.
Writes <out>/<image stem>.jpg per image of --source (images only, not videos).
"""

import argparse
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.backends import DetectMultiBackend
from utils.augmentations import letterbox
from utils.general import LOGGER, check_img_size, non_max_suppression, scale_coords
from utils.heatmaps import Heatmaps, blend, draw_detections
from utils.sources import IMG_FORMATS, imread, list_files, suffix, to_chw_rgb
from utils.torch_utils import select_device

TITLE_H, BAR_H = 28, 34  # pixels of the title row and of the colour bar with its labels
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", required=True, help=".pt models, one column each")
    p.add_argument("--source", required=True, help="image file, dir, glob or .txt list of paths")
    p.add_argument("--out", required=True, help="folder for the grid images")
    p.add_argument("--img", "--imgsz", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--method", default="EigenCAM", help="grad-cam method (utils.heatmaps.SUPPORTED)")
    p.add_argument("--layer", nargs="+", type=int, help="layer indices read in every model (default: Detect's)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold of the drawn detections")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--height", type=int, default=360, help="height of each column's image in the grid (pixels)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--half", action="store_true", help="FP16 on CUDA, bfloat16 autocast on CPU")
    return p.parse_args(argv)


def model_title(backend, weights):
    """'<variant> | <file>': the model yaml's stem and the weights file (with its run for runs/*/weights/*.pt)."""
    w = Path(weights)
    yaml_file = getattr(backend.model, "yaml_file", None) or "model"
    file = f"{w.parent.parent.name}/{w.name}" if w.parent.name == "weights" else w.name
    return f"{Path(str(yaml_file)).stem} | {file}"


def load_models(opt, device):
    """[(title, backend, Heatmaps, imgsz)] per --weights; a bad model, layer or method fails before any image."""
    models = []
    for w in opt.weights:
        backend = DetectMultiBackend(w, device=device, fp16=opt.half)
        heatmaps = Heatmaps(backend, opt.layer, opt.method, opt.conf_thres)
        models.append((model_title(backend, w), backend, heatmaps, check_img_size(opt.img, backend.stride)))
    return models


def column(backend, heatmaps, imgsz, im0, opt):
    """One model's tile for BGR image im0: its heat blended over im0 with its detections drawn."""
    x = letterbox(im0, imgsz, stride=backend.stride)[0]
    x = torch.from_numpy(to_chw_rgb(x)).to(backend.device)[None]
    x = (x.half() if backend.fp16 else x.float()) / 255
    with torch.no_grad():
        pred = non_max_suppression(backend(x)[0], opt.conf_thres, opt.iou_thres)[0]
    pred[:, :4] = scale_coords(x.shape[2:], pred[:, :4], im0.shape).round()
    heat = heatmaps.compute(x, [im0.shape[:2]])[0]
    return draw_detections(blend(heat, im0), pred, backend.names)


def titled(tile, title, height):
    """tile resized to height, under a white row holding title (shrunk to fit the tile's width)."""
    tile = cv2.resize(tile, (max(round(tile.shape[1] * height / tile.shape[0]), 1), height))
    row = np.full((TITLE_H, tile.shape[1], 3), WHITE, np.uint8)
    (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 1, 1)
    scale = min(0.55, 0.95 * tile.shape[1] / tw)
    cv2.putText(
        row, title, (4, (TITLE_H + int(th * scale)) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, 1, cv2.LINE_AA
    )
    return np.vstack([row, tile])


def colour_bar(width):
    """The shared JET scale from 0 (left) to 1 (right) with its end labels and a caption, width pixels wide."""
    bar = np.full((BAR_H, width, 3), WHITE, np.uint8)
    bar[:12] = cv2.applyColorMap(np.linspace(0, 255, width).astype(np.uint8)[None].repeat(12, 0), cv2.COLORMAP_JET)
    text = "heat, each model scaled to its own [0, 1]: 0 = coolest, 1 = hottest spot on this image"
    scale = min(0.45, 0.8 * width / cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1, 1)[0][0])
    for x, label in ((4, "0"), (width - 14, "1"), (24, text)):
        cv2.putText(bar, label, (x, BAR_H - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, 1, cv2.LINE_AA)
    return bar


def grid(tiles, titles, height):
    """Titled tiles side by side (2 px white gaps) over the colour bar."""
    gap = np.full((height + TITLE_H, 2, 3), WHITE, np.uint8)
    cols = [titled(t, title, height) for t, title in zip(tiles, titles)]
    row = np.hstack([c for col in cols for c in (col, gap)][:-1])
    return np.vstack([row, colour_bar(row.shape[1])])


def images(source):
    """The image files of source (videos are left out: the grids are per image)."""
    files = [f for f in list_files(source, recursive=False) if suffix(f) in IMG_FORMATS]
    if not files:
        raise FileNotFoundError(f"--source {source}: no images found (formats: {', '.join(IMG_FORMATS)})")
    return files


def run(opt):
    """Write one grid per source image into opt.out; returns the grid paths."""
    files = images(opt.source)
    models = load_models(opt, select_device(opt.device))
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        im0 = imread(f)
        if im0 is None:
            LOGGER.warning(f"WARNING: {f} could not be read, skipping")
            continue
        tiles = [column(backend, hm, imgsz, im0, opt) for _, backend, hm, imgsz in models]
        path = out / f"{Path(f).stem}.jpg"
        if not cv2.imwrite(str(path), grid(tiles, [m[0] for m in models], opt.height)):
            raise OSError(f"could not write {path}")
        written.append(path)
        LOGGER.info(f"{path}: {len(models)} models")
    return written


def main(argv=None):
    opt = parse_opt(argv)
    try:
        run(opt)
    except (FileNotFoundError, ValueError, OSError, pickle.UnpicklingError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
