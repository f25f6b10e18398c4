"""Training loggers: results.csv in v6.1 columns and TensorBoard (scalars, model graph, images), as YOLOv5 v6.1."""

import csv
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path

import torch
from PIL import Image

from utils.atomic import atomic_write
from utils.general import LOGGER, colorstr
from utils.plots import plot_images
from utils.torch_utils import de_parallel
from utils.train_utils import RESULT_KEYS

END_IMAGES = (
    "labels.jpg",
    "labels_correlogram.jpg",
    "results.png",
    "confusion_matrix.png",
    "F1_curve.png",
    "PR_curve.png",
    "P_curve.png",
    "R_curve.png",
)


def tensorboard_writer(save_dir):
    """A SummaryWriter into save_dir, or None (with a warning) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        LOGGER.warning(
            f"{colorstr('TensorBoard: ')}WARNING: tensorboard is not installed (pip install tensorboard); "
            "logging to results.csv only"
        )
        return None
    LOGGER.info(
        f"{colorstr('TensorBoard: ')}Start with 'tensorboard --logdir {Path(save_dir).parent}', "
        "view at http://localhost:6006/"
    )
    return SummaryWriter(str(save_dir))


def _csv_bytes(rows):
    """rows as csv.writer writes them to a file opened with newline="" (CRLF line ends)."""
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


class Loggers:
    """results.csv rows every epoch; TensorBoard scalars, graph and images unless tensorboard=False."""

    def __init__(self, save_dir, tensorboard=True):
        self.save_dir = Path(save_dir)
        self.csv = self.save_dir / "results.csv"
        self.tb = tensorboard_writer(save_dir) if tensorboard else None

    def log_graph(self, model, imgs):
        """The model graph, traced on a copy (train mode, as v6.1) from one image of the batch; a failure only warns."""
        if not self.tb:
            return
        try:
            m = deepcopy(de_parallel(model)).train()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # jit trace warnings about data-dependent shapes
                traced = torch.jit.trace(m, imgs[0:1].float(), strict=False, check_trace=False)
                self.tb.add_graph(traced, [])  # add_graph would retrace in eval mode, where Detect caches grids
        except Exception as e:  # tracing support differs by block and torch version; the graph is optional
            LOGGER.warning(f"{colorstr('TensorBoard: ')}WARNING: model graph not logged: {type(e).__name__}: {e}")

    def log_image(self, file, step=0):
        """An image file (jpg/png) under its stem as tag, its encoded bytes as they are (TensorBoard shows JPEG and
        PNG; decoding and re-encoding as PNG made events 5x larger and took seconds); absent files are skipped."""
        file = Path(file)
        if not (self.tb and file.is_file()):
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        with Image.open(file) as im:
            (w, h), bands = im.size, len(im.getbands())
        image = Summary.Image(height=h, width=w, colorspace=bands, encoded_image_string=file.read_bytes())
        self.tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=file.stem, image=image)]), step)

    def plot_batch(self, ni, imgs, targets, paths, file, names):
        """train_batch{ni}.jpg (the batch as a mosaic with its labels), then the same file as a TensorBoard image."""
        plot_images(imgs, targets, paths, file, names)
        self.log_image(file, ni)

    def drop_from(self, epoch):
        """Remove results.csv rows of epochs >= epoch (a resumed run repeats the epoch that was interrupted)."""
        if not self.csv.exists():
            return
        with open(self.csv, newline="") as f:
            rows = list(csv.reader(f))
        keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epoch]
        atomic_write(self.csv, lambda f: f.write(_csv_bytes(keep)))

    def log_epoch(self, epoch, values, extra=None):
        """One results.csv row (epoch, RESULT_KEYS values) and every value as a TensorBoard scalar.

        The file is rewritten whole (utils.atomic): a full disk leaves the previous rows, never half a row."""
        old = self.csv.read_bytes() if self.csv.exists() else b""
        rows = [] if old else [["%20s" % k for k in ["epoch", *RESULT_KEYS]]]
        rows.append([f"{epoch:>20}", *(f"{float(v):20.5g}" for v in values)])
        atomic_write(self.csv, lambda f: f.write(old + _csv_bytes(rows)))
        if self.tb:
            for k, v in {**dict(zip(RESULT_KEYS, values)), **(extra or {})}.items():
                self.tb.add_scalar(k, float(v), epoch)

    def on_train_end(self, epoch):
        """The label statistics, results and validation plots as TensorBoard images; closes the writer."""
        for name in END_IMAGES:
            self.log_image(self.save_dir / name, epoch)
        self.close()

    def close(self):
        if self.tb:
            self.tb.close()
            self.tb = None


class BackgroundJobs:
    """Plots and TensorBoard images run one after another on a worker thread, off the training loop's path.

    close() returns when every submitted job is done; a job that failed is reported as a warning (a plot never
    stops a training run).
    """

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
        self.jobs = []

    def submit(self, fn, *args, **kwargs):
        self.jobs.append((fn.__name__, self.pool.submit(fn, *args, **kwargs)))

    def close(self):
        for name, job in self.jobs:
            e = job.exception()
            if e is not None:
                LOGGER.warning(f"WARNING: {name} failed: {type(e).__name__}: {e}")
        self.jobs = []
        self.pool.shutdown()
