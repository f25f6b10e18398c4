"""Training/validation datasets: image+label checks, label cache, mosaic augmentation and dataloaders."""

import hashlib
import json
import os
from contextlib import contextmanager
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from utils.augmentations import augment_hsv, letterbox, mixup, random_perspective
from utils.general import LOGGER, NUM_THREADS, xywhn2xyxy, xyxy2xywhn
from utils.reproducibility import AUGMENT, seeded_rng
from utils.sources import (  # noqa: F401 (re-export)
    IMG_FORMATS,
    VID_FORMATS,
    LoadImages,
    LoadStreams,
    displayed_size,
    img2label_paths,
    imread,
    list_files,
    suffix,
    to_chw_rgb,
)

CACHE_VERSION = 2  # 2: per-image EXIF orientation and repaired-JPEG path
COORD_TOL = 1e-3  # normalised coordinates may overshoot [0, 1] by this much (rounding); they are clipped
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
AUTO_CACHE_SHARE = 0.1  # training images are decoded once, into RAM, when they take at most this share of free RAM


def writable(path):
    """True if path may be written: permitted for this user and not marked read-only (even for root)."""
    path = Path(path)
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def _check_image(im_file, cache_dir):
    """Verify one image; returns ((w, h) as shown, EXIF orientation, repaired .npy or None, warning) or raises."""
    with Image.open(im_file) as im:
        im.verify()  # first: Pillow refuses verify() after any other read (a PNG's EXIF included)
    with Image.open(im_file) as im:
        fmt = (im.format or "").lower()
    *shape, orientation = displayed_size(im_file)
    if shape[0] < 10 or shape[1] < 10:
        raise ValueError(f"image size {shape} <10 pixels")
    if fmt not in IMG_FORMATS:
        raise ValueError(f"invalid image format {fmt}")
    if fmt == "jpeg":
        with open(im_file, "rb") as f:
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":  # missing end-of-image marker: truncated file
                return (shape, orientation, *_repair_jpeg(im_file, orientation, cache_dir))
    return shape, orientation, None, ""


def _repair_jpeg(im_file, orientation, cache_dir):
    """Decode a truncated JPEG once and keep the result in the cache folder; the user's file is never touched."""
    im = imread(im_file, orientation)
    if im is None:
        raise ValueError("truncated JPEG that cannot be decoded")
    target = Path(cache_dir) / cache_name(im_file, ".repaired.npy") if cache_dir else None
    try:
        if target is None or not _ensure_dir(target.parent):
            raise PermissionError("no writable cache folder")
        np.save(target, im)
    except OSError as e:
        return None, f"WARNING: {im_file}: corrupt JPEG (truncated), decoded as is on every read ({e})"
    return str(target), f"WARNING: {im_file}: corrupt JPEG (truncated): its decodable part is cached in {target}"


def _ensure_dir(path):
    """Create path if needed; True when files may be written there."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return writable(path)


def cache_name(im_file, ext=".npy"):
    """Cache file name for an image: its stem plus a fingerprint of path, size and mtime (a changed image misses)."""
    st = os.stat(im_file)
    key = hashlib.md5(f"{os.path.abspath(im_file)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{Path(im_file).stem}.{key}{ext}"


def _box_row(row):
    """A label row as (class, x, y, w, h): a polygon `class x1 y1 ... xn yn` (n >= 3) becomes its bounding box."""
    if len(row) == 5:
        return row
    if len(row) < 7 or len(row) % 2 == 0:
        raise ValueError(f"{len(row)} columns: expected 5 (class x y w h) or a polygon (class x1 y1 x2 y2 x3 y3 ...)")
    xy = np.array(row[1:], dtype=np.float64).reshape(-1, 2)
    (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
    return [row[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _parse_label(lb_file):
    """(n, 5) float32 labels of a label file, with duplicates removed; returns (labels, warning message)."""
    rows = [[float(v) for v in x.split()] for x in Path(lb_file).read_text().strip().splitlines() if x.strip()]
    for i, row in enumerate(rows):
        try:
            rows[i] = _box_row(row)
        except ValueError as e:
            raise ValueError(f"label row {i + 1}: {e}") from None
    lb = np.array(rows, dtype=np.float32).reshape(-1, 5)
    if not np.isfinite(lb).all():
        raise ValueError("non-finite label values")
    if (lb[:, 0] < 0).any() or (lb[:, 0] % 1 != 0).any():
        raise ValueError(f"class labels must be integers >= 0, got {lb[:, 0][(lb[:, 0] < 0) | (lb[:, 0] % 1 != 0)]}")
    bad = (lb[:, 1:] < -COORD_TOL) | (lb[:, 1:] > 1 + COORD_TOL)
    if bad.any():
        raise ValueError(f"non-normalized or out of bounds coordinates {lb[:, 1:][bad]}")
    lb[:, 1:] = lb[:, 1:].clip(0, 1)
    _, keep = np.unique(lb, axis=0, return_index=True)
    if len(keep) < len(lb):
        msg = f"WARNING: {lb_file}: {len(lb) - len(keep)} duplicate labels removed"
        return lb[np.sort(keep)], msg
    return lb, ""


def verify_image_label(args):
    """Check one (image, label file, prefix, cache dir); returns im_file, labels, info, nm, nf, ne, nc, message."""
    im_file, lb_file, prefix, cache_dir = args
    nm = nf = ne = 0
    try:
        shape, orientation, repaired, msg = _check_image(im_file, cache_dir)
        info = {"shape": list(shape), "orientation": orientation, "repaired": repaired}
        if os.path.isfile(lb_file):
            nf = 1
            lb, lb_msg = _parse_label(lb_file)
            msg = "\n".join(prefix + m for m in (msg, lb_msg) if m)
            ne = int(len(lb) == 0)
        else:
            nm, lb, msg = 1, np.zeros((0, 5), dtype=np.float32), prefix + msg if msg else ""
        return im_file, lb, info, nm, nf, ne, 0, msg
    except Exception as e:  # any unreadable file or bad label is reported and the pair skipped
        return None, None, None, nm, nf, ne, 1, f"{prefix}WARNING: {im_file}: ignoring corrupt image/label: {e}"


def get_hash(paths):
    """Hash of file paths, sizes and modification times: changes whenever any of the files changes."""
    h = hashlib.md5()
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()


def load_label_cache(cache_path, hash_):
    """The cache dict stored at cache_path if it exists and matches hash_ and the version, else None."""
    try:
        cache = json.loads(Path(cache_path).read_text())
    except (OSError, ValueError):  # absent, unreadable, or an old/foreign format
        return None
    if not isinstance(cache, dict) or cache.get("version") != CACHE_VERSION or cache.get("hash") != hash_:
        return None
    return cache


def save_label_cache(cache_path, cache, prefix=""):
    """Write the cache atomically as JSON; warn and carry on when the folder is not writable."""
    tmp = Path(f"{cache_path}.tmp")
    try:
        if not writable(tmp.parent):
            raise PermissionError(f"{tmp.parent} is read-only")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
        LOGGER.info(f"{prefix}New cache created: {cache_path}")
    except OSError as e:
        LOGGER.warning(
            f"{prefix}WARNING: cache directory {Path(cache_path).parent} is not writeable, labels are not cached: {e}"
        )


def scan_labels(img_files, label_files, cache_path, prefix=""):
    """Verify every image/label pair (threaded) and build the cache dict."""
    labels, msgs, counts = {}, [], np.zeros(4, dtype=int)  # missing, found, empty, corrupt
    desc = f"{prefix}Scanning '{cache_path.parent / cache_path.stem}' images and labels..."
    n, cache_dir = len(img_files), image_cache_dir(cache_path)
    with ThreadPool(NUM_THREADS) as pool:
        results = pool.imap(verify_image_label, zip(img_files, label_files, [prefix] * n, [cache_dir] * n))
        pbar = tqdm(results, desc=desc, total=len(img_files), bar_format=BAR_FORMAT)
        for im_file, lb, info, *c, msg in pbar:
            counts += c
            if im_file:
                labels[im_file] = {"labels": lb.tolist(), **info}
            if msg:
                msgs.append(msg)
            pbar.desc = f"{desc} {counts[1]} found, {counts[0]} missing, {counts[2]} empty, {counts[3]} corrupt"
        pbar.close()
    return {"version": CACHE_VERSION, "labels": labels, "msgs": msgs, "results": counts.tolist(), "n": len(img_files)}


def cache_path_for(path, label_files):
    """<labels dir>.cache for a dir source, <list>.cache for a .txt source."""
    if isinstance(path, (str, Path)) and Path(path).is_file():
        return Path(path).with_suffix(".cache")
    return Path(label_files[0]).parent.with_suffix(".cache")


def image_cache_dir(cache_path):
    """Folder beside the label cache for image caches (--cache disk .npy, repaired JPEGs): never the image folder."""
    return Path(cache_path).parent / f"{Path(cache_path).stem}.cache-images"


def load_labels(path, img_files, label_files, prefix=""):
    """Labels per image from the cache (rebuilt when stale); logs the scan summary and every warning."""
    cache_path = cache_path_for(path, label_files)
    hash_ = get_hash(label_files + img_files)
    cache = load_label_cache(cache_path, hash_)
    if cache is None:
        cache = scan_labels(img_files, label_files, cache_path, prefix)
        cache["hash"] = hash_
        save_label_cache(cache_path, cache, prefix)
    else:
        nm, nf, ne, nc = cache["results"]
        LOGGER.info(
            f"{prefix}Scanning '{cache_path}' images and labels... {nf} found, {nm} missing, "
            f"{ne} empty, {nc} corrupt (from cache)"
        )
    if cache["msgs"]:
        LOGGER.warning("\n".join(cache["msgs"]))
    return cache, cache_path


class LoadImagesAndLabels(Dataset):
    """YOLO images + labels for train/val: letterbox or mosaic, optional augmentation, rect batches, caching."""

    seed, epoch = 0, 0  # the augmentation of sample i is drawn from seeded_rng(seed, AUGMENT, epoch, i)

    def __init__(
        self,
        path,
        img_size=640,
        batch_size=16,
        augment=False,
        hyp=None,
        rect=False,
        image_weights=False,
        cache_images=False,
        single_cls=False,
        stride=32,
        pad=0.0,
        prefix="",
    ):
        """Index the images of path (dir, glob, .txt list or a list of these) and load their checked labels."""
        self.img_size, self.augment, self.hyp, self.stride, self.path = img_size, augment, hyp, stride, path
        self.image_weights = image_weights
        self.rect = False if image_weights else rect
        self.mosaic = augment and not self.rect  # mosaic only when training without rect batches
        self.mosaic_border = [-img_size // 2, -img_size // 2]
        img_files = sorted(f for f in list_files(path) if suffix(f) in IMG_FORMATS)
        if not img_files:
            raise FileNotFoundError(f"{prefix}no images found in {path}; supported formats are {IMG_FORMATS}")
        cache, self.cache_path = load_labels(path, img_files, img2label_paths(img_files), prefix)
        nm, nf, ne, nc = cache["results"]
        if nf == 0 and augment:
            raise ValueError(
                f"{prefix}no labels found for {path} (cache {self.cache_path}): cannot train without labels"
            )
        if not cache["labels"]:
            raise ValueError(f"{prefix}all {cache['n']} images in {path} are corrupt or unreadable, see the warnings")
        self.img_files = list(cache["labels"])
        self.label_files = img2label_paths(self.img_files)
        self.labels = [np.array(v["labels"], dtype=np.float32).reshape(-1, 5) for v in cache["labels"].values()]
        self.shapes = np.array([v["shape"] for v in cache["labels"].values()], dtype=np.float64)
        self.orientations = [v["orientation"] for v in cache["labels"].values()]
        self.repaired = [v["repaired"] for v in cache["labels"].values()]
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        self.n = len(self.img_files)
        self.batch = np.floor(np.arange(self.n) / batch_size).astype(int)  # batch index of each image
        self.indices = range(self.n)
        if self.rect:
            self._rect_batches(batch_size, pad)
        self._warn_unsupported_hyp(prefix)
        self.ims, self.im_hw0, self.im_hw = [None] * self.n, [None] * self.n, [None] * self.n
        self.npy_dir = image_cache_dir(self.cache_path)
        self.npy_files = [self.npy_dir / cache_name(f) for f in self.img_files]
        self.cache_mode = None
        if cache_images:
            self._cache_images("disk" if cache_images == "disk" else "ram", prefix)
        elif self.augment and (size := self.resized_bytes()) <= AUTO_CACHE_SHARE * available_ram():
            LOGGER.info(f"{prefix}{size / 1e9:.2f} GB of resized images fit in RAM: cached")
            self._cache_images("ram", prefix)

    def resized_bytes(self):
        """RAM that load_image's output of every image takes (long side img_size, 3 uint8 channels)."""
        wh = self.shapes * (self.img_size / self.shapes.max(1, initial=1))[:, None]
        return int(np.maximum(wh.astype(int), 1).prod(1).sum() * 3)

    def _rect_batches(self, batch_size, pad):
        """Sort images by aspect ratio and give each batch the smallest stride-multiple shape that fits."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        order = ar.argsort()
        for k in ("img_files", "label_files", "labels", "orientations", "repaired"):
            setattr(self, k, [getattr(self, k)[i] for i in order])
        self.shapes, ar = self.shapes[order], ar[order]
        shapes = []
        for i in range(self.batch[-1] + 1):
            ari = ar[self.batch == i]
            mini, maxi = ari.min(), ari.max()
            shapes.append([maxi, 1] if maxi < 1 else [1, 1 / mini] if mini > 1 else [1, 1])  # (h, w) relative
        self.batch_shapes = np.ceil(np.array(shapes) * self.img_size / self.stride + pad).astype(int) * self.stride

    def _warn_unsupported_hyp(self, prefix):
        """copy_paste needs segment labels, which this dataset does not load: say so when it is asked for."""
        if self.augment and self.hyp and self.hyp.get("copy_paste", 0) > 0:
            LOGGER.warning(
                f"{prefix}WARNING: hyp copy_paste={self.hyp['copy_paste']} is ignored: copy-paste "
                f"needs segment labels, which this project does not load. Set copy_paste: 0."
            )

    def _cache_images(self, mode, prefix):
        """Cache resized images in RAM, or original images as .npy in the cache folder ('disk'; RAM if read-only)."""
        if mode == "disk" and not self._disk_writable(prefix):
            mode = "ram"
        self.cache_mode = mode
        fn = self._save_npy if mode == "disk" else self.load_image
        gb = 0
        with ThreadPool(NUM_THREADS) as pool:
            pbar = tqdm(enumerate(pool.imap(fn, range(self.n))), total=self.n, bar_format=BAR_FORMAT)
            for i, x in pbar:
                if mode == "disk":
                    gb += self.npy_files[i].stat().st_size
                else:
                    self.ims[i], self.im_hw0[i], self.im_hw[i] = x
                    gb += self.ims[i].nbytes
                pbar.desc = f"{prefix}Caching images ({gb / 1e9:.1f}GB {mode})"
            pbar.close()
        if mode == "disk":
            self._prune_stale_npy()

    def _prune_stale_npy(self):
        """Remove .npy caches of images that changed or left the dataset (their fingerprint no longer matches)."""
        current = {p.name for p in self.npy_files} | {Path(r).name for r in self.repaired if r}
        for p in self.npy_dir.glob("*.npy"):
            if p.name not in current:
                p.unlink(missing_ok=True)

    def _disk_writable(self, prefix):
        """True if .npy files can be written in the cache folder; warns otherwise."""
        if _ensure_dir(self.npy_dir):
            return True
        LOGGER.warning(
            f"{prefix}WARNING: cannot write the .npy image cache folder {self.npy_dir} (read-only?), "
            f"caching images in RAM instead"
        )
        return False

    def _save_npy(self, i):
        """Write image i as .npy (original size, BGR, as shown) if not there yet."""
        if not self.npy_files[i].exists():
            tmp = self.npy_files[i].with_suffix(".tmp.npy")
            np.save(tmp, self._read(i))
            os.replace(tmp, self.npy_files[i])

    def _read(self, i):
        """Original BGR image i from its .npy cache, its repaired decode, or the file; a clear error if unreadable."""
        if self.cache_mode == "disk" and self.npy_files[i].exists():
            return np.load(self.npy_files[i])
        if self.repaired[i] and os.path.isfile(self.repaired[i]):
            return np.load(self.repaired[i])
        im = imread(self.img_files[i], self.orientations[i])
        if im is None:
            raise FileNotFoundError(f"image not found or unreadable: {self.img_files[i]}")
        return im

    def load_image(self, i):
        """Image i resized so its long side is img_size; returns im, (h0, w0), (h, w)."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        im = self._read(i)
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_AREA if r < 1 and not self.augment else cv2.INTER_LINEAR
            size = max(int(w0 * r), 1), max(int(h0 * r), 1)  # an extreme aspect ratio keeps at least 1 pixel
            im = cv2.resize(im, size, interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def __len__(self):
        """Number of images."""
        return len(self.img_files)

    def set_epoch(self, epoch):
        """Draw this epoch's augmentations when indexed by a plain index (a loader's EpochSampler sends the epoch)."""
        self.epoch = epoch

    def __getitem__(self, index):
        """(uint8 CHW RGB tensor, (n, 6) [0, cls, x, y, w, h] labels, path, shapes or None for mosaics).

        index: a sample index, or (epoch, index) from EpochSampler, which persistent workers need: their copy of
        the dataset keeps the epoch it had when they were started.
        """
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        rng = seeded_rng(self.seed, AUGMENT, epoch, index)  # same draws whatever worker loads it
        index = self.indices[index]  # image_weights: train.py resamples self.indices each epoch
        hyp = self.hyp
        if self.augment and hyp is None:
            raise ValueError("LoadImagesAndLabels(augment=True) needs hyp (e.g. data/hyps/hyp.scratch-low.yaml)")
        if self.mosaic and rng.random() < hyp["mosaic"]:
            im, labels = self.load_mosaic(index, rng)
            shapes = None
            if rng.random() < hyp["mixup"]:
                im, labels = mixup(im, labels, *self.load_mosaic(int(rng.integers(self.n)), rng), rng=rng)
        else:
            im, labels, shapes = self._load_letterboxed(index, rng)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=im.shape[1], h=im.shape[0], clip=True, eps=1e-3)
        if self.augment:
            im, labels = self._color_and_flips(im, labels, rng)
        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(labels)
        return torch.from_numpy(to_chw_rgb(im)), labels_out, self.img_files[index], shapes

    def _load_letterboxed(self, index, rng):
        """Single image letterboxed to its batch shape (rect) or img_size; labels as pixel xyxy."""
        im, (h0, w0), (h, w) = self.load_image(index)
        shape = self.batch_shapes[self.batch[index]] if self.rect else self.img_size
        im, ratio, pad = letterbox(im, shape, auto=False, scaleup=self.augment)
        shapes = (h0, w0), ((h / h0, w / w0), pad)  # for rescaling predictions to the original image
        labels = self.labels[index].astype(np.float64)
        if labels.size:
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        if self.augment:
            hyp = self.hyp
            im, labels = random_perspective(
                im,
                labels,
                degrees=hyp["degrees"],
                translate=hyp["translate"],
                scale=hyp["scale"],
                shear=hyp["shear"],
                perspective=hyp["perspective"],
                rng=rng,
            )
        return im, labels, shapes

    def _color_and_flips(self, im, labels, rng):
        """HSV jitter and random up-down / left-right flips (labels normalised xywh)."""
        hyp = self.hyp
        augment_hsv(im, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"], rng=rng)
        if rng.random() < hyp["flipud"]:
            im = np.flipud(im)
            labels[:, 2] = 1 - labels[:, 2]
        if rng.random() < hyp["fliplr"]:
            im = np.fliplr(im)
            labels[:, 1] = 1 - labels[:, 1]
        return im, labels

    def load_mosaic(self, index, rng):
        """4 images tiled around a random centre on a 2*img_size canvas, then warped back to img_size."""
        s = self.img_size
        yc, xc = (int(rng.uniform(-b, 2 * s + b)) for b in self.mosaic_border)  # centre in [s/2, 3s/2]
        indices = [index] + [self.indices[j] for j in rng.integers(len(self.indices), size=3)]
        indices = [indices[j] for j in rng.permutation(4)]
        canvas = np.full((s * 2, s * 2, 3), 114, dtype=np.uint8)
        labels4 = []
        for i, idx in enumerate(indices):  # quadrants: top-left, top-right, bottom-left, bottom-right
            im, _, (h, w) = self.load_image(idx)
            px, py = (xc - w if i in (0, 2) else xc), (yc - h if i in (0, 1) else yc)  # image top-left on canvas
            x1, y1, x2, y2 = max(px, 0), max(py, 0), min(px + w, 2 * s), min(py + h, 2 * s)
            canvas[y1:y2, x1:x2] = im[y1 - py : y2 - py, x1 - px : x2 - px]
            labels = self.labels[idx].astype(np.float64)
            if labels.size:
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw=px, padh=py)
            labels4.append(labels)
        labels4 = np.concatenate(labels4, 0)
        labels4[:, 1:] = labels4[:, 1:].clip(0, 2 * s)
        hyp = self.hyp
        return random_perspective(
            canvas,
            labels4,
            degrees=hyp["degrees"],
            translate=hyp["translate"],
            scale=hyp["scale"],
            shear=hyp["shear"],
            perspective=hyp["perspective"],
            border=self.mosaic_border,
            rng=rng,
        )

    @staticmethod
    def collate_fn(batch):
        """Stack images and concatenate labels, writing each label's image index into column 0."""
        im, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(im, 0), torch.cat(labels, 0), paths, shapes


@contextmanager
def rank_zero_first(rank):
    """In DDP, let rank 0 build (and cache) the dataset before the other ranks read it."""
    if rank not in (-1, 0):
        dist.barrier()
    yield
    if rank == 0:
        dist.barrier()


def create_dataloader(
    path,
    imgsz,
    batch_size,
    stride,
    single_cls=False,
    hyp=None,
    augment=False,
    cache=False,
    pad=0.0,
    rect=False,
    rank=-1,
    workers=8,
    image_weights=False,
    prefix="",
    shuffle=False,
    seed=0,
):
    """Build LoadImagesAndLabels and its DataLoader (DistributedSampler when rank != -1); returns loader, dataset."""
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    with rank_zero_first(rank):
        dataset = LoadImagesAndLabels(
            path,
            imgsz,
            batch_size,
            augment=augment,
            hyp=hyp,
            rect=rect,
            image_weights=image_weights,
            cache_images=cache,
            single_cls=single_cls,
            stride=int(stride),
            pad=pad,
            prefix=prefix,
        )
    batch_size = min(batch_size, len(dataset))
    nw = min(os.cpu_count() or 1, batch_size if batch_size > 1 else 0, workers)
    dataset.seed = seed
    sampler = epoch_sampler(dataset, rank, shuffle, seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=nw,
        sampler=sampler,
        pin_memory=torch.cuda.is_available(),
        collate_fn=dataset.collate_fn,
        persistent_workers=nw > 0 and not image_weights,  # image weights: workers must see each epoch's indices
    )  # kept workers: a fork per epoch would copy-on-write-fault all the memory the trainer reuses
    return loader, dataset


def check_label_classes(dataset, nc, data=""):
    """Raise a clear error naming the label file when a class id is >= nc (before any training or scoring)."""
    for lb, lb_file in zip(dataset.labels, dataset.label_files):
        if len(lb) and lb[:, 0].max() >= nc:
            c = int(lb[:, 0].max())
            raise ValueError(
                f"{lb_file}: class {c} >= nc={nc}{f' of {data}' if data else ''}: "
                f"class ids must be 0-{nc - 1}; fix the label file or raise nc (and names) in the yaml"
            )


class EpochSampler(DistributedSampler):
    """DistributedSampler whose items are (epoch, index): each sample's augmentation follows the sampler's epoch."""

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


def available_ram():
    """Bytes of memory available to new allocations (Linux MemAvailable; 0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0


def epoch_sampler(dataset, rank, shuffle, seed):
    """Batch order as a function of (seed, epoch) via set_epoch, one shard per DDP rank (a single one without DDP)."""
    if rank == -1:
        return EpochSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    return EpochSampler(dataset, shuffle=shuffle, seed=seed)


def set_loader_epoch(loader, epoch):
    """Key the batch order and every sample's augmentation to this epoch."""
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
