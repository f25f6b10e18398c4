"""Validate a trained YOLOv5 model on a dataset: P, R, mAP@.5, mAP@.5:.95, speed and plots.

Usage: python val.py --data raccoon.yaml --weights yolov5n.pt --img 640
"""

import argparse
import json
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from threading import Thread

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.backends import DetectMultiBackend
from utils.atomic import WriteError
from utils.datasets import check_label_classes, create_dataloader
from utils.downloads import check_dataset
from utils.general import (
    LOGGER,
    check_img_size,
    check_yaml,
    colorstr,
    increment_path,
    non_max_suppression,
    print_args,
    scale_coords,
    xywh2xyxy,
    xyxy2xywh,
)
from utils.metrics import ConfusionMatrix, ap_per_class, match_predictions
from utils.plots import output_to_target, plot_images, plot_val_study
from utils.torch_utils import keep_freed_memory, select_device, time_sync

STUDY_SIZES = range(256, 1536 + 128, 128)  # v6.1's --task study image sizes
ROW = "%20s" + "%11i" * 2 + "%11.3g" * 4
HEADER = ("%20s" + "%11s" * 6) % ("Class", "Images", "Labels", "P", "R", "mAP@.5", "mAP@.5:.95")
BAR = "{l_bar}{bar:10}{r_bar}"
COCO80_TO_91 = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
]


def save_one_txt(predn, save_conf, shape, file):
    """Rows `cls x y w h [conf]` normalised to the original image."""
    gn = torch.tensor(shape)[[1, 0, 1, 0]]
    with open(file, "a") as f:
        for *xyxy, conf, cls in predn.tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
            line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


def save_one_json(predn, jdict, path, class_map):
    """COCO results rows: image_id, category_id, bbox [x, y, w, h] (top-left corner), score."""
    image_id = int(path.stem) if path.stem.isnumeric() else path.stem
    box = xyxy2xywh(predn[:, :4])
    box[:, :2] -= box[:, 2:] / 2
    for p, b in zip(predn.tolist(), box.tolist()):
        jdict.append(
            {
                "image_id": image_id,
                "category_id": class_map[int(p[5])],
                "bbox": [round(x, 3) for x in b],
                "score": round(p[4], 5),
            }
        )


class _Run:
    """State of one validation pass (counters, stats, timing, outputs)."""

    def __init__(self, nc, names, save_dir, device):
        self.iouv = torch.linspace(0.5, 0.95, 10, device=device)
        self.confusion = ConfusionMatrix(nc=nc)
        self.names, self.save_dir = names, save_dir
        self.stats, self.jdict, self.seen, self.dt = [], [], 0, [0.0, 0.0, 0.0]
        self.last_batch, self.plot_threads = [], []

    def score_batch(self, out, targets, im, paths, shapes, single_cls):
        """Score every image of a batch; keeps (predictions in original pixels, path, shape) in last_batch."""
        self.last_batch = []
        for si, pred in enumerate(out):
            labels = targets[targets[:, 0] == si, 1:]
            predn = self.score_image(pred, labels, im[si].shape[1:], shapes[si][0], shapes[si][1], single_cls)
            self.last_batch.append((predn, Path(paths[si]), shapes[si][0]))

    def score_image(self, pred, labels, im_shape, shape, ratio_pad, single_cls):
        """Append (correct, conf, cls, target cls) for one image; returns predictions in original pixels."""
        self.seen += 1
        tcls = labels[:, 0].tolist()
        if single_cls:
            pred[:, 5] = 0
        predn = pred.clone()
        scale_coords(im_shape, predn[:, :4], shape, ratio_pad)
        correct = torch.zeros(pred.shape[0], len(self.iouv), dtype=torch.bool, device=pred.device)
        if len(labels):
            tbox = xywh2xyxy(labels[:, 1:5])
            scale_coords(im_shape, tbox, shape, ratio_pad)
            labelsn = torch.cat((labels[:, 0:1], tbox), 1)
            if len(pred):
                correct = match_predictions(predn, labelsn, self.iouv)
                self.confusion.process_batch(predn, labelsn)
        if len(pred) or len(labels):
            self.stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), tcls))
        return predn


def spare_core_workers(workers, device):
    """Loader workers that do not take cores from inference: on CPU, at most the cores torch's threads leave."""
    if device.type != "cpu":
        return workers
    return min(workers, max(0, (os.cpu_count() or 1) - torch.get_num_threads()))


def _load_model(weights, device, imgsz, half, data, trust=False):
    """DetectMultiBackend for any exported format; names from the model, else from --data."""
    model = DetectMultiBackend(weights, device=device, data=data, fp16=half, trust=trust)
    stride = model.stride
    imgsz = check_img_size(imgsz, s=stride)
    data = check_dataset(data)
    return model, stride, imgsz, data


def _make_loader(data, task, imgsz, batch_size, stride, single_cls, workers, rect=True):
    pad, rect = (0.0, False) if task == "speed" else (0.5, rect)
    split = _split(task)
    if not data.get(split):
        raise ValueError(f"dataset has no '{split}' split")
    return create_dataloader(
        data[split],
        imgsz,
        batch_size,
        stride,
        single_cls,
        pad=pad,
        rect=rect,
        workers=workers,
        prefix=colorstr(f"{split}: "),
    )[0]


def _plot_in_background(*args):
    """plot_images in a thread: a failed write (full disk) is one warning line, not a thread traceback."""
    try:
        plot_images(*args)
    except WriteError as e:
        LOGGER.warning(f"WARNING: {e}")


def _plot_batch(batch_i, im, targets, out, paths, run):
    if batch_i >= 3:
        return
    names = run.names
    for kind, boxes in (("labels", targets), ("pred", output_to_target(out))):
        args = (im, boxes, paths, run.save_dir / f"val_batch{batch_i}_{kind}.jpg", names)
        run.plot_threads.append(Thread(target=_plot_in_background, args=args, daemon=True))
        run.plot_threads[-1].start()


def _summarise(run, nc, plots, verbose, training, split="val"):
    """ap_per_class over everything seen; logs the `all` row (and per class), or a warning when the split has no
    labels; returns metrics and per-class AP."""
    stats = [np.concatenate(x, 0) for x in zip(*run.stats)] if run.stats else []
    mp = mr = map50 = map_ = 0.0
    ap_class, ap50, ap, p, r = [], [], [], [], []
    if len(stats) and stats[0].any():
        p, r, ap, f1, ap_class = ap_per_class(*stats, plot=plots, save_dir=run.save_dir, names=run.names)
        ap50, ap = ap[:, 0], ap.mean(1)
        mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap.mean()
    nt = np.bincount(stats[3].astype(np.int64), minlength=nc) if len(stats) else np.zeros(1)
    LOGGER.info(ROW % ("all", run.seen, nt.sum(), mp, mr, map50, map_))
    if nt.sum() == 0:
        LOGGER.warning(f"WARNING: no labels found in {split} set, can not compute metrics without labels")
    if (verbose or (nc < 50 and not training)) and nc > 1 and len(stats):
        for i, c in enumerate(ap_class):
            LOGGER.info(ROW % (run.names[c], run.seen, nt[c], p[i], r[i], ap50[i], ap[i]))
    maps = np.zeros(nc) + map_
    for i, c in enumerate(ap_class):
        maps[c] = ap[i]
    return (mp, mr, map50, map_), maps


def _save_json(run, weights, data):
    w = Path(weights[0] if isinstance(weights, list) else weights).stem if weights else ""
    pred_json = run.save_dir / f"{w}_predictions.json"
    LOGGER.info(f"\nSaving {pred_json}...")
    with open(pred_json, "w") as f:
        json.dump(run.jdict, f)
    if not str(data.get("val", "")).endswith("val2017.txt"):
        return None
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        LOGGER.info("pycocotools not installed: skipping the official COCO mAP")
        return None
    anno = COCO(str(Path(data["path"]) / "annotations/instances_val2017.json"))
    ev = COCOeval(anno, anno.loadRes(str(pred_json)), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats[:2]


def _split(task):
    """The dataset split a task reads: train, val or test (speed and study read val)."""
    return task if task in ("train", "val", "test") else "val"


def _standalone(data, weights, batch_size, imgsz, task, device, workers, single_cls, half, trust_weights):
    """val.py on its own: device, model (any exported format) and the split's loader.

    Returns (device, model, dataloader, data dict, half, batch size, image size)."""
    device = select_device(device, batch_size=batch_size)
    keep_freed_memory()
    workers = spare_core_workers(workers, device)
    half = device.type != "cpu" if half is None else half  # None: FP16 on CUDA, as v6.1's default
    model, stride, imgsz, data = _load_model(weights, device, imgsz, half, data, trust_weights)
    if not model.dynamic:
        batch_size = 1
        LOGGER.info(
            f"Forcing --batch-size 1 square inference shape(1,3,{imgsz},{imgsz}) for a model "
            f"exported with a fixed input shape"
        )
    dataloader = _make_loader(data, task, imgsz, batch_size, stride, single_cls, workers, rect=model.dynamic)
    check_label_classes(dataloader.dataset, 1 if single_cls else int(data["nc"]))
    half = model.fp16  # FP16 inputs for an FP16 model; bfloat16 autocast on CPU takes float32 ones
    return device, model, dataloader, data, half, batch_size, imgsz


@torch.no_grad()
def run(
    data,
    weights=None,
    batch_size=32,
    imgsz=640,
    conf_thres=0.001,
    iou_thres=0.6,
    task="val",
    device="",
    workers=8,
    single_cls=False,
    verbose=False,
    save_txt=False,
    save_hybrid=False,
    save_conf=False,
    save_json=False,
    project=ROOT / "runs/val",
    name="exp",
    exist_ok=False,
    half=None,
    model=None,
    dataloader=None,
    save_dir=Path(""),
    plots=True,
    compute_loss=None,
    augment=False,
    trust_weights=False,
):
    """Validate (v6.1's keyword API, called by val.py, train.py and hub users): a model and loader from training,
    or --weights in any exported format on the --data split; the scoring itself is evaluate().

    Returns ((P, R, mAP@.5, mAP@.5:.95, box, obj, cls losses), per-class mAP, (pre, inf, nms) ms)."""
    training = model is not None
    if training:
        device = next(model.parameters()).device
        half = half is not False and device.type != "cpu"  # None: FP16 on CUDA, as v6.1
        model.half() if half else model.float()
    else:
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
        (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
        options = (data, weights, batch_size, imgsz, task, device, workers, single_cls, half, trust_weights)
        device, model, dataloader, data, half, batch_size, imgsz = _standalone(*options)
    outputs = Outputs(
        Path(save_dir), save_txt, save_hybrid, save_conf, save_json, plots, verbose, weights, _split(task)
    )
    scoring = dict(half=half, conf_thres=conf_thres, iou_thres=iou_thres, single_cls=single_cls, augment=augment)
    results = evaluate(
        model, dataloader, data, device, compute_loss=compute_loss, outputs=outputs, training=training, **scoring
    )
    if not training:
        _log_outputs(Path(save_dir), results[2], (batch_size, 3, imgsz, imgsz), save_txt)
    return results


@dataclass
class Outputs:
    """What evaluate() writes and logs besides the metrics."""

    save_dir: Path = Path("")
    save_txt: bool = False
    save_hybrid: bool = False
    save_conf: bool = False
    save_json: bool = False
    plots: bool = True
    verbose: bool = False
    weights: object = None  # the --weights the predictions json is named after
    split: str = "val"  # the split named by the no-labels warning


@torch.no_grad()
def evaluate(
    model,
    dataloader,
    data,
    device,
    half=False,
    conf_thres=0.001,
    iou_thres=0.6,
    single_cls=False,
    augment=False,
    compute_loss=None,
    outputs=None,
    training=False,
):
    """Score model's detections on every batch of dataloader against its labels (data: the dataset dict).

    Returns ((P, R, mAP@.5, mAP@.5:.95, box, obj, cls losses), per-class mAP, (pre, inf, nms) ms per image)."""
    o = outputs or Outputs()
    model.eval()
    nc = 1 if single_cls else int(data["nc"])
    names = dict(enumerate(model.names if hasattr(model, "names") else model.module.names))
    class_map = COCO80_TO_91 if str(data.get("val", "")).endswith("val2017.txt") else list(range(1000))
    r = _Run(nc, names, o.save_dir, device)
    loss = torch.zeros(3, device=device)
    for batch_i, (im, targets, paths, shapes) in enumerate(tqdm(dataloader, desc=HEADER, bar_format=BAR)):
        t1 = time_sync()
        im = (im.to(device, non_blocking=True).half() if half else im.to(device, non_blocking=True).float()) / 255
        targets = targets.to(device)
        t2 = time_sync()
        out, train_out = model(im, augment=augment)
        t3 = time_sync()
        if compute_loss:
            loss += compute_loss([x.float() for x in train_out], targets)[1]
        out, targets = _nms(out, targets, im.shape, conf_thres, iou_thres, o.save_hybrid, single_cls)
        r.dt = [r.dt[0] + t2 - t1, r.dt[1] + t3 - t2, r.dt[2] + time_sync() - t3]
        r.score_batch(out, targets, im, paths, shapes, single_cls)
        _save_batch(r, o, class_map)
        if o.plots:
            _plot_batch(batch_i, im, targets, out, paths, r)
    metrics, maps = _summarise(r, nc, o.plots, o.verbose, training, o.split)
    if o.plots:
        r.confusion.plot(save_dir=r.save_dir, names=list(names.values()))
        for thread in r.plot_threads:  # the batch images are complete when run returns
            thread.join()
    if o.save_json and len(r.jdict):
        coco = _save_json(r, o.weights, data)
        if coco is not None:
            metrics = (*metrics[:2], coco[1], coco[0])
    model.float()
    t = tuple(x / max(r.seen, 1) * 1e3 for x in r.dt)
    return (*metrics, *(loss.cpu() / max(len(dataloader), 1)).tolist()), maps, t


def _nms(out, targets, shape, conf_thres, iou_thres, save_hybrid, single_cls):
    """NMS (multi-label, v6.1's val settings); targets' boxes scaled to input pixels (labels for --save-hybrid)."""
    nb, _, height, width = shape
    targets[:, 2:] *= torch.tensor((width, height, width, height), device=targets.device)
    lb = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if save_hybrid else []
    return non_max_suppression(out, conf_thres, iou_thres, labels=lb, multi_label=True, agnostic=single_cls), targets


def _save_batch(r, o, class_map):
    """--save-txt rows and --save-json entries of the batch just scored."""
    for predn, path, shape in r.last_batch:
        if o.save_txt:
            save_one_txt(predn, o.save_conf, shape, file=r.save_dir / "labels" / (path.stem + ".txt"))
        if o.save_json:
            save_one_json(predn, r.jdict, path, class_map)


def _log_outputs(save_dir, t, shape, save_txt):
    LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}" % t)
    s = f"\n{len(list(save_dir.glob('labels/*.txt')))} labels saved to {save_dir / 'labels'}" if save_txt else ""
    LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{s}")


def study(opt, x=STUDY_SIZES):
    """For each weights file, validate at every img size in x; rows P R mAP@.5 mAP@.5:.95 losses(3) speeds(3)
    to study_<data>_<weights>.txt in the current folder, then the mAP-against-speed plot study.png."""
    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    files = []
    for w in weights:
        f = Path(f"study_{Path(opt.data).stem}_{Path(w).stem}.txt")
        y = []
        for size in x:
            LOGGER.info(f"\nRunning {f} --imgsz {size}...")
            r, _, t = run(**{**vars(opt), "weights": w, "imgsz": size, "task": "val"}, plots=False)
            y.append(list(r) + list(t))
        np.savetxt(f, y, fmt="%10.4g")
        files.append(f)
    plot_val_study(files, x=list(x))
    return files


def parse_opt(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=str, default=ROOT / "data/shapes.yaml", help="dataset.yaml path")
    parser.add_argument(
        "--weights", nargs="+", type=str, default="runs/train/exp/weights/best.pt", help="model.pt path(s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    parser.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument(
        "--task",
        default="val",
        choices=["train", "val", "test", "speed", "study"],
        help="split, speed, or study (mAP and speed at img 256..1536)",
    )
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    parser.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    parser.add_argument("--augment", action="store_true", help="augmented inference (TTA)")
    parser.add_argument("--verbose", action="store_true", help="report mAP by class")
    parser.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    parser.add_argument("--save-hybrid", action="store_true", help="save label+prediction hybrid results to *.txt")
    parser.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    parser.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    parser.add_argument("--project", default=ROOT / "runs/val", help="save to project/name")
    parser.add_argument("--name", default="exp", help="save to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--half", action="store_true", help="FP16 inference on CUDA; bfloat16 autocast on CPU (.pt)")
    parser.add_argument("--trust-weights", action="store_true", help="load a .pt even on a torch below 2.10 (CVEs)")
    opt = parser.parse_args(argv)
    opt.data = check_yaml(opt.data)
    opt.save_json |= str(opt.data).endswith("coco.yaml")
    opt.save_txt |= opt.save_hybrid
    print_args(Path(__file__).stem, opt)
    return opt


def main(opt):
    """Validate (task train/val/test), time each weights file (task speed: conf 0.25, iou 0.45, FP16 on CUDA),
    or run the img-size study (task study)."""
    if opt.task == "study":
        return study(opt)
    if opt.task != "speed":
        if opt.conf_thres > 0.001:
            LOGGER.info(f"WARNING: confidence threshold {opt.conf_thres} > 0.001 gives invalid mAP values.")
        return run(**vars(opt))
    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    opt.conf_thres, opt.iou_thres, opt.save_json, opt.half = 0.25, 0.45, False, opt.half or None  # None: FP16 on CUDA
    return [run(**{**vars(opt), "weights": w}, plots=False) for w in weights]


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError, ConnectionError, pickle.UnpicklingError, WriteError) as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
