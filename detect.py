"""Run YOLOv5 inference on images, videos, directories, globs, .txt lists of paths, webcams and streams.

Usage: python detect.py --weights best.pt --source path/to/images --img 640
"""

import argparse
import pickle
import sys
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.backends import DetectMultiBackend
from utils.downloads import download_url, is_url
from utils.general import (
    LOGGER,
    check_img_size,
    colorstr,
    increment_path,
    non_max_suppression,
    print_args,
    scale_coords,
    xyxy2xywh,
)
from utils.heatmaps import Heatmaps
from utils.plots import Annotator, colors, save_one_box, visualize_features
from utils.sources import IMG_FORMATS, VID_FORMATS, LoadImages, LoadStreams
from utils.torch_utils import select_device, time_sync

DEFAULT_SOURCE = ROOT / "data" / "images"  # bus.jpg and zidane.jpg, as in v6.1
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")


def is_stream(source):
    """True for a webcam index, a stream URL that is not an image/video file, or a .streams list."""
    s = str(source)
    is_file_url = s.rsplit(".", 1)[-1].lower() in IMG_FORMATS + VID_FORMATS
    return s.isnumeric() or s.endswith(".streams") or (s.lower().startswith(STREAM_PREFIXES) and not is_file_url)


def check_imshow():
    """True when OpenCV can open windows; a warning otherwise (e.g. opencv-python-headless)."""
    try:
        cv2.imshow("test", np.zeros((1, 1, 3), dtype=np.uint8))
        cv2.waitKey(1)
        cv2.destroyAllWindows()
        return True
    except cv2.error:
        LOGGER.warning(
            "WARNING: --view-img: this OpenCV build cannot show windows (opencv-python-headless?); "
            "continuing without display"
        )
        return False


def load_model(weights, device, half, data=None, trust=False):
    """A DetectMultiBackend (.pt, .safetensors or an ensemble of them, .torchscript, .onnx, *_openvino_model/),
    stride, names."""
    model = DetectMultiBackend(weights, device=device, data=data, fp16=half, trust=trust)
    return model, model.stride, model.names


def make_dataset(source, imgsz, stride, auto=True):
    """(dataset, webcam): LoadStreams for webcams and stream URLs, LoadImages for everything else.

    auto=False letterboxes to exactly imgsz (models exported with a fixed input shape)."""
    if is_stream(source):
        return LoadStreams(source, img_size=imgsz, stride=stride, auto=auto), True
    return LoadImages(source, img_size=imgsz, stride=stride, auto=auto), False


def preprocess(im, device, half):
    """uint8 CHW/NCHW numpy -> float (or half) NCHW tensor in 0..1."""
    im = torch.from_numpy(im).to(device)
    im = im.half() if half else im.float()
    im /= 255
    return im[None] if im.ndim == 3 else im


def describe(det, names):
    """Per-class counts like v6.1: '2 raccoons, 1 dog, '."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += f"{n} {names[int(c)]}{'s' * (n > 1)}, "
    return s


def save_txt_rows(det, shape, file, save_conf):
    """Append rows `cls x y w h [conf]` normalised to an image of shape (h, w, ...), lowest confidence first."""
    gn = torch.tensor(shape)[[1, 0, 1, 0]]
    with open(file, "a") as f:
        for *xyxy, conf, cls in reversed(det).tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
            line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


class VideoSaver:
    """Writes frames of each video or stream to `<name>.mp4`, opening a new cv2.VideoWriter per new file."""

    def __init__(self, n):
        """n: number of parallel sources (streams), 1 for files."""
        self.paths, self.writers = [None] * n, [None] * n

    def write(self, i, im0, save_path, cap):
        """Append frame im0 of source i; fps and size come from the capture (30 FPS and the frame for streams)."""
        if self.paths[i] != save_path:
            self.paths[i] = save_path
            if self.writers[i] is not None:
                self.writers[i].release()
            if cap is not None:
                fps = cap.get(cv2.CAP_PROP_FPS) or 30
                w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            else:
                fps, w, h = 30, im0.shape[1], im0.shape[0]
            file = str(Path(save_path).with_suffix(".mp4"))
            self.writers[i] = cv2.VideoWriter(file, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not self.writers[i].isOpened():
                LOGGER.warning(f"WARNING: could not open a video writer for {file}; its frames are not saved")
        self.writers[i].write(im0)

    def close(self):
        """Release every open writer (finishes the files)."""
        for w in self.writers:
            if w is not None:
                w.release()
        self.writers = [None] * len(self.writers)


class ResultSink:
    """Everything done with one image's detections: labels, crops, annotation, display and saving."""

    def __init__(
        self,
        save_dir,
        names,
        n_sources,
        save_img,
        save_txt,
        save_conf,
        save_crop,
        view_img,
        line_thickness,
        hide_labels,
        hide_conf,
    ):
        """Options as in run(); n_sources sizes the per-stream video writers."""
        self.save_dir, self.names, self.videos = save_dir, names, VideoSaver(n_sources)
        self.save_img, self.save_txt, self.save_conf, self.save_crop = save_img, save_txt, save_conf, save_crop
        self.view_img, self.lw, self.hide_labels, self.hide_conf = view_img, line_thickness, hide_labels, hide_conf

    def handle(self, i, det, p, im0, frame, mode, cap):
        """Save/show the results of det (pixels of im0, [xyxy, conf, cls]) for source path p."""
        p = Path(p)
        if self.save_txt and len(det):
            stem = p.stem + ("" if mode == "image" else f"_{frame}")
            save_txt_rows(det, im0.shape, self.save_dir / "labels" / f"{stem}.txt", self.save_conf)
        if not (self.save_img or self.save_crop or self.view_img):
            return
        im0 = self.annotate(det, im0, p)
        if self.view_img:
            cv2.imshow(str(p), im0)
            cv2.waitKey(1)
        if self.save_img:
            self.save(i, im0, str(self.save_dir / p.name), mode, cap)

    def annotate(self, det, im0, p):
        """Draw the boxes on im0 (crops are cut from an untouched copy first); returns the annotated image."""
        imc = im0.copy() if self.save_crop else im0
        annotator = Annotator(im0, line_width=self.lw, example=str(self.names))
        for *xyxy, conf, cls in reversed(det).tolist():
            c = int(cls)
            if self.save_img or self.view_img:
                name = self.names[c]
                label = None if self.hide_labels else (name if self.hide_conf else f"{name} {conf:.2f}")
                annotator.box_label(xyxy, label, color=colors(c, True))
            if self.save_crop:
                save_one_box(xyxy, imc, file=self.save_dir / "crops" / self.names[c] / f"{p.stem}.jpg", BGR=True)
        return annotator.result()

    def save(self, i, im0, save_path, mode, cap):
        """An image file for images, a frame of `<name>.mp4` for videos and streams."""
        if mode == "image":
            if not cv2.imwrite(save_path, im0):
                LOGGER.warning(f"WARNING: could not write {save_path}")
        else:
            self.videos.write(i, im0, save_path, cap)


def _visualizer(model, save_dir, path):
    """Feature maps of this image's forward go to save_dir/<image stem>[2, 3, ...]/ (v6.1 layout)."""
    stem = Path(path[0] if isinstance(path, list) else path).stem
    return visualize_features(model, increment_path(save_dir / stem, mkdir=True))


def _inference_size(imgsz, stride):
    """[h, w] from an int or 1-2 values, each rounded up to a multiple of stride."""
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if len(imgsz) not in (1, 2):
        raise ValueError(f"--imgsz takes one value (square) or two (h w), got {imgsz}")
    return check_img_size(imgsz * 2 if len(imgsz) == 1 else imgsz, s=stride)


def _log_summary(dt, seen, imgsz, save_dir, save_txt, save_img):
    """The v6.1 speed line and the 'Results saved to' line."""
    if not seen:
        LOGGER.warning("WARNING: no image or frame could be read from the source")
        return
    t = tuple(x / seen * 1e3 for x in dt)
    LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % t)
    if save_txt or save_img:
        s = f"\n{len(list(save_dir.glob('labels/*.txt')))} labels saved to {save_dir / 'labels'}" if save_txt else ""
        LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{s}")


@torch.no_grad()
def run(
    weights=ROOT / "yolov5s.pt",
    source=DEFAULT_SOURCE,
    imgsz=(640, 640),
    conf_thres=0.25,
    iou_thres=0.45,
    max_det=1000,
    device="",
    view_img=False,
    save_txt=False,
    save_conf=False,
    save_crop=False,
    nosave=False,
    classes=None,
    agnostic_nms=False,
    project=ROOT / "runs/detect",
    name="exp",
    exist_ok=False,
    line_thickness=3,
    hide_labels=False,
    hide_conf=False,
    half=False,
    augment=False,
    visualize=False,
    data=ROOT / "data/coco128.yaml",
    heatmap=False,
    heatmap_layer=None,
    heatmap_method="EigenCAM",
    trust_weights=False,
):
    """Detect objects in source with weights (v6.1's keyword API: detect.py and hub users call it); writes results
    under project/name and returns that folder. The setup is here, the per-image work in detect_source()."""
    source, save_img = str(source), not nosave
    if is_url(source) and Path(urlsplit(source).path).suffix[1:].lower() in IMG_FORMATS + VID_FORMATS:
        source = download_url(source)
    device = select_device(device)
    model, stride, names = load_model(weights, device, half, data=data, trust=trust_weights)
    heatmaps = Heatmaps(model, heatmap_layer, heatmap_method, conf_thres) if heatmap else None
    imgsz = _inference_size(imgsz, stride)
    dataset, webcam = make_dataset(source, imgsz, stride, auto=model.dynamic)
    view_img = check_imshow() if (view_img or webcam) else False
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    flags = (save_img, save_txt, save_conf, save_crop, view_img, line_thickness, hide_labels, hide_conf)
    sink = ResultSink(save_dir, names, len(dataset) if webcam else 1, *flags)
    if device.type != "cpu":  # warm up CUDA kernels before timing
        model.warmup(imgsz=(1, 3, *imgsz))
    nms = {"conf_thres": conf_thres, "iou_thres": iou_thres, "classes": classes, "agnostic": agnostic_nms}
    try:
        dt, seen = detect_source(
            model, dataset, sink, {**nms, "max_det": max_det}, augment, visualize, webcam, heatmaps
        )
    finally:
        sink.videos.close()
    _log_summary(dt, seen, imgsz, save_dir, save_txt, save_img)
    return save_dir


def detect_source(model, dataset, sink, nms, augment=False, visualize=False, webcam=False, heatmaps=None):
    """Every image or frame of dataset through model (a DetectMultiBackend) and NMS (keywords of
    non_max_suppression); each image's detections, in its own pixels, go to sink (a ResultSink), and its heatmap
    to `heatmaps` (utils.heatmaps.Heatmaps) when given.

    Returns ([pre-process, inference, NMS] seconds summed, images seen)."""
    half = model.fp16  # FP16 inputs for an FP16 model; bfloat16 autocast on CPU takes float32 ones
    dt, seen = [0.0, 0.0, 0.0], 0
    for path, im, im0s, cap, s in dataset:
        t1 = time_sync()
        im = preprocess(im, model.device, half)
        t2 = time_sync()
        with _visualizer(model.model if model.pt else model, sink.save_dir, path) if visualize else nullcontext():
            pred = model(im, augment=augment)[0]
        t3 = time_sync()
        pred = non_max_suppression(pred, **nms)
        dt = [dt[0] + t2 - t1, dt[1] + t3 - t2, dt[2] + time_sync() - t3]
        for i, det in enumerate(pred):
            seen += 1
            if webcam:
                p, im0, frame, log = path[i], im0s[i].copy(), dataset.count, f"{i}: "
            else:
                p, im0, frame, log = path, im0s.copy(), getattr(dataset, "frame", 0), s
            log += "%gx%g " % im.shape[2:]
            if len(det):
                det[:, :4] = scale_coords(im.shape[2:], det[:, :4], im0.shape).round()
                log += describe(det, sink.names)
            if heatmaps:  # before the sink draws the boxes onto im0
                heatmaps.save(sink.save_dir, im, i, det, p, im0, frame, dataset.mode)
            sink.handle(i, det, p, im0, frame, dataset.mode, cap)
            LOGGER.info(f"{log}Done. ({t3 - t2:.3f}s)")
    return dt, seen


def parse_opt(argv=None):
    """detect.py command-line options (YOLOv5 v6.1 flags)."""
    has_default = DEFAULT_SOURCE.exists()
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", nargs="+", type=str, default=ROOT / "yolov5s.pt", help="model path(s)")
    parser.add_argument(
        "--data",
        type=str,
        default=ROOT / "data/coco128.yaml",
        help="(optional) dataset.yaml: class names for model files without them",
    )
    parser.add_argument(
        "--source",
        type=str,
        default=DEFAULT_SOURCE if has_default else None,
        required=not has_default,
        help="file/dir/glob/video/.txt list of paths, 0 for webcam, or a stream URL",
    )
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    parser.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--view-img", action="store_true", help="show results")
    parser.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    parser.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    parser.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    parser.add_argument("--nosave", action="store_true", help="do not save images/videos")
    parser.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--augment", action="store_true", help="augmented inference (TTA)")
    parser.add_argument("--visualize", action="store_true", help="save each layer's feature maps per image")
    parser.add_argument("--project", default=ROOT / "runs/detect", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    parser.add_argument("--hide-labels", action="store_true", help="hide labels")
    parser.add_argument("--hide-conf", action="store_true", help="hide confidences")
    parser.add_argument("--half", action="store_true", help="FP16 inference on CUDA; bfloat16 autocast on CPU (.pt)")
    parser.add_argument("--heatmap", action="store_true", help="save class-activation heatmaps to <run>/heatmaps (.pt)")
    parser.add_argument("--heatmap-layer", nargs="+", type=int, help="layer indices for --heatmap (default: Detect's)")
    parser.add_argument("--heatmap-method", default="EigenCAM", help="grad-cam method for --heatmap, e.g. GradCAM")
    parser.add_argument("--trust-weights", action="store_true", help="load a .pt even on a torch below 2.10 (CVEs)")
    opt = parser.parse_args(argv)
    opt.imgsz *= 2 if len(opt.imgsz) == 1 else 1
    print_args(Path(__file__).stem, opt)
    return opt


def main(opt):
    """Run detection with parsed options."""
    return run(**vars(opt))


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError, ConnectionError, pickle.UnpicklingError) as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
