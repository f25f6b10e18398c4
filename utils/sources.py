"""Input listing shared by train/val/detect, and the detect.py sources (image/video files and streams)."""

import glob
import math
import os
import time
from pathlib import Path
from threading import Thread

import cv2
import numpy as np
from PIL import Image, ImageOps

from utils.augmentations import letterbox
from utils.general import LOGGER

IMG_FORMATS = ["bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"]
VID_FORMATS = ["asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "wmv"]


_ORIENT = {  # EXIF orientation -> how to turn the stored pixels into what viewers show
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a),
}


def exif_orientation(path):
    """EXIF orientation tag (1-8) of an image file; 1 when absent, invalid or unreadable."""
    try:
        with Image.open(path) as im:
            o = im.getexif().get(0x0112, 1)
    except Exception:  # any decoder error means no usable orientation
        return 1
    return o if o in range(1, 9) else 1


def _is_tiff(path):
    return suffix(str(path)) in ("tif", "tiff")


def _read_tiff(path):
    """TIFF through Pillow's exif_transpose: TIFF readers disagree on whether decoding already applied the tag."""
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[..., ::-1])
    except Exception:  # unreadable: reported by the caller like a failed cv2.imread
        return None


def displayed_size(path):
    """(w, h, orientation) of an image as viewers show it; orientation is what imread must still apply."""
    with Image.open(path) as im:
        if _is_tiff(path):
            return (*ImageOps.exif_transpose(im).size, 1)
        w, h = im.size
    o = exif_orientation(path)
    return (h, w, o) if o in (5, 6, 7, 8) else (w, h, o)  # transposed or rotated by 90/270 degrees


def imread(path, orientation=None):
    """BGR uint8 image as viewers show it (EXIF orientation applied by one rule for every format and OpenCV)."""
    if _is_tiff(path):
        return _read_tiff(path)
    im = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if im is None:
        return None
    o = exif_orientation(path) if orientation is None else orientation
    return np.ascontiguousarray(_ORIENT[o](im)) if o in _ORIENT else im


def img2label_paths(img_paths):
    """Label file for each image: the last /images/ becomes /labels/ and the extension .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(str(x).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in img_paths]


def _read_list(txt):
    """Paths listed one per line in a .txt file; relative lines are resolved against the file's folder."""
    lines = [x.strip() for x in Path(txt).read_text().splitlines() if x.strip()]
    files = [x if os.path.isabs(x) else os.path.normpath(os.path.join(Path(txt).parent, x)) for x in lines]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        LOGGER.warning(f"WARNING: {txt}: {len(missing)} listed files do not exist and are skipped, e.g. {missing[:3]}")
    return files


def list_files(path, recursive=True):
    """All files named by path: a dir, a glob, a .txt list of paths, a single file, or a list of these."""
    files = []
    for p in path if isinstance(path, (list, tuple)) else [path]:
        p = str(p)
        if "*" in p:
            files += sorted(glob.glob(p, recursive=True))
        elif os.path.isdir(p):
            pattern = os.path.join(p, "**", "*.*") if recursive else os.path.join(p, "*.*")
            files += sorted(glob.glob(pattern, recursive=recursive))
        elif os.path.isfile(p):
            files += _read_list(p) if p.lower().endswith(".txt") else [p]
        else:
            raise FileNotFoundError(f"{p} does not exist (expected a file, a dir, a glob or a .txt list of paths)")
    return [os.path.abspath(f) for f in files if os.path.isfile(f)]


def suffix(path):
    """Lower-case extension of path without the dot."""
    return path.rsplit(".", 1)[-1].lower()


def to_chw_rgb(im):
    """BGR HWC uint8 image (or NHWC batch) to a contiguous RGB CHW (NCHW) array."""
    return np.ascontiguousarray(im[..., ::-1].transpose((2, 0, 1) if im.ndim == 3 else (0, 3, 1, 2)))


class LoadImages:
    """Iterate images and video frames for inference: yields (path, CHW RGB letterboxed, BGR original, cap, log)."""

    def __init__(self, path, img_size=640, stride=32, auto=True):
        """List the images and videos of path (file, dir, glob, .txt list or a list of these)."""
        files = list_files(path, recursive=False)
        images = [x for x in files if suffix(x) in IMG_FORMATS]
        videos = [x for x in files if suffix(x) in VID_FORMATS]
        self.img_size, self.stride, self.auto = img_size, stride, auto
        self.files = images + videos
        self.nf = len(self.files)
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.mode = "image"
        self.cap, self.frame, self.frames = None, 0, 0
        if not self.nf:
            raise FileNotFoundError(
                f"No images or videos found in {path}. Supported formats are:\n"
                f"images: {IMG_FORMATS}\nvideos: {VID_FORMATS}"
            )

    def __iter__(self):
        """Restart from the first file (re-opening the first video, if any)."""
        self.count = 0
        if any(self.video_flag):
            self._new_video(self.files[self.video_flag.index(True)])
        return self

    def __next__(self):
        """Next (path, img, im0, cap, log string); unreadable images are reported and skipped."""
        while self.count < self.nf:
            if self.video_flag[self.count]:
                im0, s = self._next_frame()
                if im0 is None:
                    break
                path = self.files[self.count]
            else:
                path = self.files[self.count]
                self.count += 1
                im0 = imread(path)
                if im0 is None:
                    LOGGER.warning(f"WARNING: image {self.count}/{self.nf} {path}: could not be read, skipping")
                    continue
                s = f"image {self.count}/{self.nf} {path}: "
            im = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
            return path, to_chw_rgb(im), im0, self.cap, s
        raise StopIteration

    def _next_frame(self):
        """Read the next frame, moving on to the next video when one ends; (None, '') after the last."""
        self.mode = "video"
        ok, im0 = self.cap.read()
        while not ok:
            self.cap.release()
            self.count += 1
            if self.count == self.nf:
                return None, ""
            self._new_video(self.files[self.count])
            ok, im0 = self.cap.read()
        self.frame += 1
        return im0, f"video {self.count + 1}/{self.nf} ({self.frame}/{self.frames}) {self.files[self.count]}: "

    def _new_video(self, path):
        """Open a video file and reset the frame counter."""
        self.frame = 0
        self.cap = cv2.VideoCapture(path)
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not self.cap.isOpened():
            LOGGER.warning(f"WARNING: video {path} could not be opened, skipping")

    def __len__(self):
        """Number of files."""
        return self.nf


class LoadStreams:
    """Read webcams / stream URLs / video files in background threads; yields the latest frame of each."""

    def __init__(self, sources="0", img_size=640, stride=32, auto=True):
        """sources: a webcam index, a URL or file, or a .txt/.streams file listing several."""
        self.mode = "stream"
        self.img_size, self.stride = img_size, stride
        if str(sources).lower().endswith((".txt", ".streams")) and os.path.isfile(sources):
            sources = [x.strip() for x in Path(sources).read_text().splitlines() if x.strip()]
        else:
            sources = [str(sources)]
        n = len(sources)
        self.sources = sources
        self.imgs, self.fps, self.frames, self.threads = [None] * n, [0] * n, [0] * n, [None] * n
        for i, s in enumerate(sources):
            self._open(i, s, f"{i + 1}/{n}: {s}... ")
        shapes = np.stack([letterbox(x, img_size, stride=stride, auto=auto)[0].shape for x in self.imgs])
        self.rect = np.unique(shapes, axis=0).shape[0] == 1  # same shape everywhere: rectangular batches
        self.auto = auto and self.rect
        if not self.rect:
            LOGGER.warning("WARNING: stream shapes differ. For optimal performance supply similarly-shaped streams.")

    def _open(self, i, s, st):
        """Open source i, read its first frame and start its reader thread."""
        cap = cv2.VideoCapture(int(s) if s.isnumeric() else s)
        if not cap.isOpened():
            raise ConnectionError(f"{st}failed to open stream {s}")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.frames[i] = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or float("inf")  # inf for live streams
        self.fps[i] = max((fps if math.isfinite(fps) else 0) % 100, 0) or 30
        ok, self.imgs[i] = cap.read()
        if not ok:
            raise ConnectionError(f"{st}opened stream {s} but could not read a frame from it")
        self.threads[i] = Thread(target=self._update, args=(i, cap, s), daemon=True)
        LOGGER.info(f"{st}success ({self.frames[i]} frames {w}x{h} at {self.fps[i]:.2f} FPS)")
        self.threads[i].start()

    def _update(self, i, cap, stream):
        """Thread body: keep self.imgs[i] at the newest frame until the stream ends."""
        n = 1  # the first frame was read in _open
        while cap.isOpened() and n < self.frames[i]:
            n += 1
            ok, im = cap.read()
            if ok:
                self.imgs[i] = im
            elif math.isinf(self.frames[i]):
                LOGGER.warning(f"WARNING: stream {stream} unresponsive, reconnecting")
                self.imgs[i] = np.zeros_like(self.imgs[i])
                cap.open(stream)
            else:
                break
            time.sleep(1 / self.fps[i])
        cap.release()

    def __iter__(self):
        """Start iterating."""
        self.count = -1
        return self

    def __next__(self):
        """(sources, NCHW RGB letterboxed batch, list of BGR frames, None, '') until a stream ends."""
        self.count += 1
        if not all(t.is_alive() for t in self.threads):
            raise StopIteration
        im0 = self.imgs.copy()
        im = np.stack([letterbox(x, self.img_size, stride=self.stride, auto=self.auto)[0] for x in im0])
        return self.sources, to_chw_rgb(im), im0, None, ""

    def __len__(self):
        """Number of sources."""
        return len(self.sources)
