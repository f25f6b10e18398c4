"""General utilities: logging, paths, file lookup, image-size checks, seeds, schedules, class weights."""

import glob
import logging
import math
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch

from utils.boxes import (  # noqa: F401 (re-export)
    clip_coords,
    non_max_suppression,
    scale_coords,
    xyn2xy,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)

ROOT = Path(__file__).resolve().parents[1]  # project root (where train.py lives)
NUM_THREADS = min(8, max(1, (os.cpu_count() or 1) - 1))  # dataloader / multiprocessing threads


def set_logging(name="yolov5"):
    """Configure and return the project logger: plain messages to stdout, INFO on rank -1/0, WARNING elsewhere."""
    rank = int(os.getenv("RANK", -1))
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO if rank in (-1, 0) else logging.WARNING)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    return logger


LOGGER = set_logging()

_ANSI = {
    "black": "\033[30m",
    "red": "\033[31m",
    "green": "\033[32m",
    "yellow": "\033[33m",
    "blue": "\033[34m",
    "magenta": "\033[35m",
    "cyan": "\033[36m",
    "white": "\033[37m",
    "bright_black": "\033[90m",
    "bright_red": "\033[91m",
    "bright_green": "\033[92m",
    "bright_yellow": "\033[93m",
    "bright_blue": "\033[94m",
    "bright_magenta": "\033[95m",
    "bright_cyan": "\033[96m",
    "bright_white": "\033[97m",
    "end": "\033[0m",
    "bold": "\033[1m",
    "underline": "\033[4m",
}


def colorstr(*args):
    """Wrap the last argument in the ANSI styles named before it, e.g. colorstr('red', 'hi'); default blue bold."""
    *styles, text = args if len(args) > 1 else ("blue", "bold", args[0])
    unknown = [s for s in styles if s not in _ANSI]
    if unknown:
        raise ValueError(f"utils/general.py colorstr: unknown style(s) {unknown}; choose from {sorted(_ANSI)}")
    return "".join(_ANSI[s] for s in styles) + f"{text}" + _ANSI["end"]


def increment_path(path, exist_ok=False, sep="", mkdir=False):
    """Return path, or path{sep}N (N = highest existing number + 1, from 2) when it exists; e.g. runs/train/exp2."""
    path = Path(path)
    if path.exists() and not exist_ok:
        path, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        pattern = re.compile(rf"^{re.escape(path.name + sep)}(\d+)$")
        numbers = [
            int(m.group(1))
            for p in path.parent.glob(f"{glob.escape(path.name)}{sep}*")
            if (m := pattern.match(p.with_suffix("").name if suffix else p.name))
        ]
        path = Path(f"{path}{sep}{max(numbers) + 1 if numbers else 2}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_suffix(file="yolov5s.pt", suffix=(".pt",), msg=""):
    """Raise ValueError when file (str or list) has a suffix outside the accepted one(s)."""
    if not file or not suffix:
        return
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    for f in [file] if isinstance(file, (str, Path)) else file:
        s = Path(f).suffix.lower()
        if s and s not in suffixes:
            raise ValueError(f"{msg}{f}: acceptable suffix is {suffixes}")


def check_file(file, suffix=""):
    """Return file if it exists, else the single file of that name found anywhere under the project root."""
    check_suffix(file, suffix)
    file = str(file)
    if file == "" or Path(file).is_file():
        return file
    found = [f for f in glob.glob(str(ROOT / "**" / glob.escape(file)), recursive=True) if Path(f).is_file()]
    if not found:
        raise FileNotFoundError(f"File not found: {file} (not a path, and not under project root {ROOT})")
    if len(found) > 1:
        raise FileNotFoundError(f"File {file} is ambiguous: {len(found)} files under {ROOT} match: {found}")
    return found[0]


def check_yaml(file, suffix=(".yaml", ".yml")):
    """Resolve a yaml file with check_file, checking its suffix."""
    return check_file(file, suffix)


def make_divisible(x, divisor):
    """Smallest multiple of divisor that is >= x (divisor may be a tensor of strides: its max is used)."""
    if isinstance(divisor, torch.Tensor):
        divisor = int(divisor.max())
    return math.ceil(x / divisor) * divisor


def check_img_size(imgsz, s=32, floor=0):
    """Round image size(s) up to a multiple of stride s (at least floor), warning when a value changes."""
    if isinstance(imgsz, int):
        new_size = max(make_divisible(imgsz, int(s)), floor)
    else:
        new_size = [max(make_divisible(x, int(s)), floor) for x in imgsz]
    if new_size != imgsz:
        LOGGER.warning(f"WARNING: --img-size {imgsz} must be multiple of max stride {s}, updating to {new_size}")
    return new_size


def print_args(name, opt):
    """Log 'name: k1=v1, k2=v2' for an argparse Namespace or a dict."""
    items = opt.items() if isinstance(opt, dict) else vars(opt).items()
    LOGGER.info(colorstr(f"{name}: ") + ", ".join(f"{k}={v}" for k, v in items))


def init_seeds(seed=0):
    """Seed python, numpy and torch; seed 0 also makes cuDNN deterministic (slower), others let it benchmark."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (False, True) if seed == 0 else (True, False)


def one_cycle(y1=0.0, y2=1.0, steps=100):
    """Lambda for a cosine ramp from y1 at step 0 to y2 at step `steps`."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def _class_counts(labels, nc):
    """Per-image class histograms (n_images, nc) of label arrays whose column 0 is the class."""
    return np.array([np.bincount(lb[:, 0].astype(int), minlength=nc)[:nc] for lb in labels])


def labels_to_class_weights(labels, nc=80):
    """Inverse-frequency class weights (sum 1) from per-image (n, 5) label arrays; empty tensor when labels absent."""
    if len(labels) == 0 or labels[0] is None:
        return torch.Tensor()
    classes = np.concatenate(labels, 0)[:, 0].astype(int)
    if classes.size and (classes.min() < 0 or classes.max() >= nc):
        raise ValueError(f"utils/general.py labels_to_class_weights: class ids must be in [0, {nc - 1}]")
    counts = np.bincount(classes, minlength=nc).astype(float)
    counts[counts == 0] = 1  # classes without labels get the weight of a class seen once
    weights = 1 / counts
    return torch.from_numpy(weights / weights.sum()).float()


def labels_to_image_weights(labels, nc=80, class_weights=None):
    """Per-image sampling weights: sum over its labels of the class weights (all 1 by default)."""
    class_weights = np.ones(nc) if class_weights is None else np.asarray(class_weights)
    return (class_weights.reshape(1, nc) * _class_counts(labels, nc)).sum(1)


def file_size(path):
    """Size in MiB of a file, or of all files under a directory (0.0 when path does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 2**20
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return 0.0
