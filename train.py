"""Train a YOLOv5 model (any attention variant) on a custom dataset, exactly as YOLOv5 v6.1 trains.

Usage:
    python train.py --data data/shapes.yaml --cfg models/yolov5_SOCA.yaml --weights '' --img 640
    python -m torch.distributed.run --nproc_per_node 2 train.py --device 0,1 ...
"""

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import val
from models.loading import load_checkpoint, ready_model
from models.yolo import Model
from utils.atomic import WriteError, atomic_write, is_write_failure
from utils.autoanchor import check_anchors
from utils.autobatch import check_train_batch_size
from utils.checkpoints import save_checkpoint
from utils.datasets import check_label_classes, create_dataloader, set_loader_epoch
from utils.downloads import attempt_download, check_dataset
from utils.evolve import evolve
from utils.general import (
    LOGGER,
    check_file,
    check_img_size,
    check_yaml,
    colorstr,
    increment_path,
    init_seeds,
    labels_to_class_weights,
    labels_to_image_weights,
    print_args,
)
from utils.loggers import BackgroundJobs, Loggers
from utils.loss import ComputeLoss
from utils.metrics import fitness
from utils.plots import plot_labels, plot_results
from utils.reproducibility import IMAGE_WEIGHTS, MULTI_SCALE, exact_state, seeded_rng, set_deterministic
from utils.safetensors_file import save_safetensors
from utils.torch_utils import (
    LOCAL_RANK,
    RANK,
    WORLD_SIZE,
    ModelEMA,
    broadcast_object,
    channels_last,
    de_parallel,
    init_ddp,
    keep_freed_memory,
)
from utils.train_utils import (
    MAX_NONFINITE,
    EarlyStopping,
    NonFiniteLossError,
    RunLock,
    check_counts,
    check_hyp,
    is_finite_model,
    lr_lambda,
    make_run_dir,
    multi_scale_size,
    scaled_shape,
    smart_optimizer,
    strip_optimizer,
    stripped,
    training_checkpoint,
    warmup_iterations,
    warmup_values,
    write_failure,
)
from utils.transfer import log_transfer, transfer_weights

NBS = 64  # nominal batch size


class Trainer:
    """One training run: model, data, optimizer and the epoch loop."""

    def __init__(self, hyp, opt, device):
        self.opt, self.device, self.cuda = opt, device, device.type != "cpu"
        self.save_dir = Path(opt.save_dir)
        self.wdir = self.save_dir / "weights"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        self.saved_epoch = None  # epoch of the last last.pt written whole (for the message of a failed write)
        self.hyp = self._load_hyp(hyp)
        self.main = RANK in (-1, 0)
        self.plots = not opt.evolve
        self.jobs, self.finished = BackgroundJobs(), {}  # plots off the critical path; stripped() of what was saved
        init_seeds(opt.seed + 1 + RANK)
        keep_freed_memory()
        self.data = check_dataset(opt.data) if self.main or RANK == -1 else None
        self.data = broadcast_object(self.data)
        self.nc = 1 if opt.single_cls else int(self.data["nc"])
        names = self.data["names"]
        names = list(names.values() if isinstance(names, dict) else names)
        self.names = ["item"] if opt.single_cls and len(names) != 1 else names
        self.is_coco = str(self.data.get("val", "")).endswith("coco/val2017.txt")

    def _load_hyp(self, hyp):
        source = hyp if isinstance(hyp, (str, Path)) else "hyperparameters"
        if isinstance(hyp, (str, Path)):
            with open(hyp, errors="ignore") as f:
                hyp = yaml.safe_load(f)
        check_hyp(hyp, source)
        LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in hyp.items()))
        if RANK in (-1, 0) and not self.opt.evolve:
            self.wdir.mkdir(parents=True, exist_ok=True)
            opts = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.opt).items()}
            for name, d in (("hyp.yaml", hyp), ("opt.yaml", opts)):
                atomic_write(self.save_dir / name, lambda f, d=d: f.write(yaml.safe_dump(d, sort_keys=False).encode()))
        return dict(hyp)

    def build_model(self):
        """Model from --cfg or the checkpoint's yaml; pretrained tensors mapped by structure (variants included)."""
        opt, w = self.opt, str(self.opt.weights)
        self.ckpt = None
        if w:  # any checkpoint file (.pt, .PT, .pth): load_checkpoint says clearly what it is not
            self.ckpt = load_checkpoint(w, map_location="cpu", trust=opt.trust_weights)
            src = self.ckpt["model"].float()  # training weights; the EMA is restored separately on --resume
            model = Model(opt.cfg or src.yaml, ch=3, nc=self.nc, anchors=self.hyp.get("anchors"))
            skip_anchors = bool(opt.cfg or self.hyp.get("anchors")) and not opt.resume
            csd, n, total, new = transfer_weights(src, model)
            if skip_anchors:
                csd = {k: v for k, v in csd.items() if "anchor" not in k}
            model.load_state_dict(csd, strict=False)
            log_transfer(len(csd), total, new, w)
        else:
            model = Model(opt.cfg, ch=3, nc=self.nc, anchors=self.hyp.get("anchors"))
        self.model = channels_last(model.to(self.device))
        self._freeze(opt.freeze)

    def _freeze(self, freeze):
        layers = freeze if len(freeze) > 1 else range(freeze[0])
        prefixes = [f"model.{x}." for x in layers]
        for k, v in self.model.named_parameters():
            v.requires_grad = True
            if any(x in k for x in prefixes):
                LOGGER.info(f"freezing {k}")
                v.requires_grad = False

    def build_optimizer(self):
        opt, hyp = self.opt, self.hyp
        self.gs = max(int(self.model.stride.max()), 32)
        self.imgsz = check_img_size(opt.imgsz, self.gs, floor=self.gs * 2)
        self.batch_size = check_train_batch_size(self.model, self.imgsz) if opt.batch_size == -1 else opt.batch_size
        self.accumulate = max(round(NBS / self.batch_size), 1)
        hyp["weight_decay"] *= self.batch_size * self.accumulate / NBS
        self.optimizer = smart_optimizer(self.model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
        self.lf = lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr)
        self.scheduler = lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.ema = ModelEMA(self.model) if self.main else None
        self.start_epoch, self.best_fitness, self.exact = 0, 0.0, None
        if self.ckpt is not None:
            self._resume_state()
        self.ckpt = None

    def _resume_state(self):
        ckpt, opt = self.ckpt, self.opt
        if ckpt.get("optimizer") is not None and opt.resume:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.best_fitness = ckpt["best_fitness"]
        if self.ema and ckpt.get("ema") is not None and opt.resume:
            self.ema.ema.load_state_dict(ckpt["ema"].float().state_dict())
            self.ema.updates = ckpt["updates"]
        if not opt.resume:
            return
        self.exact = ckpt.get("exact")
        self.start_epoch = ckpt["epoch"] + 1
        self.saved_epoch = ckpt["epoch"]
        if self.start_epoch <= 0:
            raise ValueError(
                f"{opt.weights} training to {opt.epochs} epochs is finished, nothing to resume.\n"
                f"Start a new training without --resume, i.e. 'python train.py --weights {opt.weights}'"
            )
        LOGGER.info(f"Resuming training from {opt.weights} from epoch {self.start_epoch} to {opt.epochs} total epochs")

    def build_data(self):
        opt, hyp = self.opt, self.hyp
        if self.cuda and RANK == -1 and torch.cuda.device_count() > 1:
            LOGGER.warning("WARNING: DP not recommended, use torch.distributed.run for best DDP Multi-GPU results.")
        if opt.sync_bn and self.cuda and RANK != -1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model).to(self.device)
            LOGGER.info("Using SyncBatchNorm()")
        self.train_loader, self.dataset = create_dataloader(
            self.data["train"],
            self.imgsz,
            self.batch_size // WORLD_SIZE,
            self.gs,
            opt.single_cls,
            hyp=hyp,
            augment=True,
            cache=opt.cache,
            rect=opt.rect,
            rank=LOCAL_RANK,
            workers=opt.workers,
            image_weights=opt.image_weights,
            prefix=colorstr("train: "),
            shuffle=True,
            seed=opt.seed,
        )
        labels = np.concatenate(self.dataset.labels, 0)
        check_label_classes(self.dataset, self.nc, opt.data)
        self.nb = len(self.train_loader)
        if self.main:
            self.val_loader = create_dataloader(
                self.data["val"],
                self.imgsz,
                self.batch_size // WORLD_SIZE * 2,
                self.gs,
                opt.single_cls,
                hyp=hyp,
                cache=None if opt.noval else opt.cache,
                rect=True,
                rank=-1,
                workers=val.spare_core_workers(opt.workers * 2, self.device),
                pad=0.5,
                prefix=colorstr("val: "),
            )[0]
            check_label_classes(self.val_loader.dataset, self.nc, opt.data)
            if not opt.resume:
                if self.plots:
                    self.jobs.submit(plot_labels, labels, self.names, self.save_dir)
                if not opt.noautoanchor:
                    check_anchors(self.dataset, model=self.model, thr=hyp["anchor_t"], imgsz=self.imgsz)
                self.model.half().float()  # pre-reduce anchor precision
        if RANK != -1:
            ids = [LOCAL_RANK] if self.cuda else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, output_device=ids and ids[0])
        self._attach_hyp(labels)

    def _attach_hyp(self, labels):
        m, hyp, nl = de_parallel(self.model), self.hyp, de_parallel(self.model).model[-1].nl
        hyp["box"] *= 3 / nl
        hyp["cls"] *= self.nc / 80 * 3 / nl
        hyp["obj"] *= (self.imgsz / 640) ** 2 * 3 / nl
        hyp["label_smoothing"] = self.opt.label_smoothing
        m.nc, m.hyp, m.names = self.nc, hyp, self.names
        m.class_weights = labels_to_class_weights(self.dataset.labels, self.nc).to(self.device) * self.nc

    def fit(self):
        """Train; a failed write (full disk) ends in one line naming the file and the last intact checkpoint."""
        try:
            return self._fit()
        except OSError as e:
            if not is_write_failure(e):
                raise
            raise write_failure(e, self.save_dir, self.last, self.saved_epoch) from None

    def _fit(self):
        self.build_model()
        self.build_optimizer()
        self.build_data()
        opt = self.opt
        self.compute_loss = ComputeLoss(self.model)
        self.stopper = EarlyStopping(patience=opt.patience)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        self.nw = warmup_iterations(self.hyp, self.nb)
        self.last_opt_step = -1
        self.maps = np.zeros(self.nc)
        self.results = (0, 0, 0, 0, 0, 0, 0)
        self.scheduler.last_epoch = self.start_epoch - 1
        self.logger = Loggers(self.save_dir, tensorboard=self.main and not (opt.evolve or opt.no_tensorboard))
        if opt.resume and self.main:
            self.logger.drop_from(self.start_epoch)
        self.nonfinite = 0
        self._restore_exact()
        LOGGER.info(
            f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
            f"Using {self.train_loader.num_workers * WORLD_SIZE} dataloader workers\n"
            f"Logging results to {colorstr('bold', self.save_dir)}\n"
            f"Starting training for {opt.epochs} epochs..."
        )
        t0, epoch = time.time(), self.start_epoch
        for epoch in range(self.start_epoch, opt.epochs):
            extra = self._epoch_hooks(epoch)
            mloss = self.train_one_epoch(epoch)
            stop = self.end_epoch(epoch, mloss, extra) if self.main else False
            if broadcast_object(stop):
                break
        if self.main:
            LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
            self.finish()
        self.logger.on_train_end(epoch)
        return self.results

    def _epoch_hooks(self, epoch):
        """Per-epoch block hooks (e.g. DynamicConv temperature), applied to the model and its EMA."""
        logs = de_parallel(self.model).epoch_update(epoch, self.opt.epochs)
        if self.ema:
            self.ema.ema.epoch_update(epoch, self.opt.epochs)
        if logs and self.main:
            LOGGER.info("block hooks: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        if self.opt.image_weights:
            cw = de_parallel(self.model).class_weights.cpu().numpy() * (1 - self.maps) ** 2 / self.nc
            iw = labels_to_image_weights(self.dataset.labels, nc=self.nc, class_weights=cw)
            rng = seeded_rng(self.opt.seed, IMAGE_WEIGHTS, epoch)
            self.dataset.indices = rng.choice(self.dataset.n, size=self.dataset.n, p=iw / iw.sum()).tolist()
        return {f"x/{k}": v for k, v in logs.items()}

    def train_one_epoch(self, epoch):
        self.model.train()
        mloss = torch.zeros(3, device=self.device)
        set_loader_epoch(self.train_loader, epoch)
        pbar = enumerate(self.train_loader)
        LOGGER.info(("\n" + "%10s" * 7) % ("Epoch", "gpu_mem", "box", "obj", "cls", "labels", "img_size"))
        if self.main:
            pbar = tqdm(pbar, total=self.nb, bar_format="{l_bar}{bar:10}{r_bar}{bar:-10b}")
        self.optimizer.zero_grad()
        for i, (imgs, targets, paths, _) in pbar:
            ni = i + self.nb * epoch
            imgs = imgs.to(self.device, non_blocking=True).float() / 255
            self._warmup(ni, epoch)
            if self.opt.multi_scale:
                imgs = self._rescale(imgs, ni)
            with torch.autocast(self.device.type, enabled=self.cuda):
                pred = self.model(imgs)
                loss, loss_items = self.compute_loss(pred, targets.to(self.device))
                if RANK != -1:
                    loss *= WORLD_SIZE
            if not torch.isfinite(loss).all():
                self._skip_nonfinite(epoch, i)
                continue
            self.nonfinite = 0
            self.scaler.scale(loss).backward()
            if ni - self.last_opt_step >= self.accumulate:
                self._step()
                self.last_opt_step = ni
            if self.main:
                mloss = (mloss * i + loss_items) / (i + 1)
                mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
                pbar.set_description(
                    ("%10s" * 2 + "%10.4g" * 5)
                    % (f"{epoch}/{self.opt.epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1])
                )
                if self.plots and ni < 3:
                    self._plot_batch(ni, imgs, targets, paths)
        self.lr = [x["lr"] for x in self.optimizer.param_groups]
        self.scheduler.step()
        return mloss

    def _plot_batch(self, ni, imgs, targets, paths):
        """The model graph at the first batch (traced now, on this model); the batch mosaic drawn in the background."""
        if ni == 0:
            self.logger.log_graph(self.model, imgs)
        f = self.save_dir / f"train_batch{ni}.jpg"
        self.jobs.submit(self.logger.plot_batch, ni, imgs, targets.clone(), paths, f, self.names)

    def _skip_nonfinite(self, epoch, i):
        """No step on a NaN/inf loss; stop after a run of them (the saved checkpoints stay the finite ones)."""
        self.nonfinite += 1
        self.optimizer.zero_grad()
        if self.nonfinite >= min(MAX_NONFINITE, self.nb):
            raise NonFiniteLossError(
                f"training stopped: {self.nonfinite} consecutive non-finite losses (epoch {epoch}, batch {i}); "
                f"{self.wdir} keeps the last finite checkpoints. Lower lr0 in --hyp, check the labels or the --weights"
            )

    def _warmup(self, ni, epoch):
        if ni > self.nw:
            return
        self.accumulate = max(1, np.interp(ni, [0, self.nw], [1, NBS / self.batch_size]).round())
        groups = self.optimizer.param_groups
        lrs, momentum = warmup_values(ni, self.nw, self.hyp, [x["initial_lr"] for x in groups], self.lf(epoch))
        for x, lr in zip(groups, lrs):
            x["lr"] = lr
            if "momentum" in x:
                x["momentum"] = momentum

    def _rescale(self, imgs, ni):
        sz = multi_scale_size(self.imgsz, self.gs, seeded_rng(self.opt.seed, MULTI_SCALE, ni))
        ns = scaled_shape(imgs.shape[2:], sz, self.gs)
        return nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)

    def _step(self):
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    def end_epoch(self, epoch, mloss, extra):
        """Validate the EMA model, log, save last/best; True when training should stop."""
        opt = self.opt
        self.ema.update_attr(self.model, include=["yaml", "nc", "hyp", "names", "stride", "class_weights"])
        final_epoch = epoch + 1 == opt.epochs or self.stopper.possible_stop
        if not opt.noval or final_epoch:
            self.results, self.maps, _ = val.run(
                self.data,
                batch_size=self.batch_size // WORLD_SIZE * 2,
                imgsz=self.imgsz,
                model=self.ema.ema,
                single_cls=opt.single_cls,
                dataloader=self.val_loader,
                save_dir=self.save_dir,
                plots=False,
                compute_loss=self.compute_loss,
            )
        fi = fitness(np.array(self.results).reshape(1, -1))[0]
        if fi > self.best_fitness:
            self.best_fitness = fi
        self.logger.log_epoch(epoch, [*mloss.tolist(), *self.results, *self.lr], extra)
        stop = self.stopper(epoch=epoch, fitness=fi)
        finite = is_finite_model(self.ema.ema)
        if not finite:
            LOGGER.warning(f"WARNING: epoch {epoch}: non-finite weights, {self.wdir} is left as it is")
        if finite and (not opt.nosave or (final_epoch and not opt.evolve)):
            ckpt = training_checkpoint(epoch, self.best_fitness, de_parallel(self.model), self.ema, self.optimizer)
            ckpt["exact"] = exact_state(
                de_parallel(self.model), self.ema, self.scaler, self.last_opt_step, self.maps, self.stopper.best_epoch
            )
            save_checkpoint(ckpt, self.last)
            self.saved_epoch = epoch
            if self.best_fitness == fi:
                save_checkpoint(ckpt, self.best)
            self.finished[self.last] = stripped(ckpt)  # its FP16 EMA only: the optimizer state is not kept
            if self.best_fitness == fi:
                self.finished[self.best] = self.finished[self.last]
            if opt.save_period > 0 and epoch % opt.save_period == 0:
                save_checkpoint(ckpt, self.wdir / f"epoch{epoch}.pt")
        return stop

    def _restore_exact(self):
        """On --resume: FP32 weights and EMA, optimizer-step counter, AMP scale, mAPs, early-stopping state."""
        s = self.exact
        if not s:
            return
        de_parallel(self.model).load_state_dict(s["model"])
        if self.ema:
            self.ema.ema.load_state_dict(s["ema"])
        self.scaler.load_state_dict(s["scaler"])
        self.last_opt_step, self.maps = s["last_opt_step"], np.array(s["maps"])
        self.stopper.best_fitness, self.stopper.best_epoch = self.best_fitness, s["best_epoch"]

    def finish(self):
        """Strip last.pt and best.pt, validate best.pt (its model as saved, not read back); results.png meanwhile."""
        if self.plots and (self.save_dir / "results.csv").exists():
            self.jobs.submit(plot_results, file=self.save_dir / "results.csv")
        for f in self.last, self.best:
            if not f.exists():
                continue
            finished = self.finished.get(f) or stripped(load_checkpoint(f, trust=True))  # trusted: this run wrote it
            x = strip_optimizer(finished, f)
            if f is self.best and self.opt.save_safetensors:
                LOGGER.info(f"Saved {save_safetensors(x['model'], f.with_suffix('.safetensors'), x)}")
            if f is self.best:
                LOGGER.info(f"\nValidating {f}...")
                self.results, _, _ = val.run(
                    self.data,
                    batch_size=self.batch_size // WORLD_SIZE * 2,
                    imgsz=self.imgsz,
                    model=channels_last(ready_model(x["model"].to(self.device))),
                    iou_thres=0.65 if self.is_coco else 0.60,
                    single_cls=self.opt.single_cls,
                    dataloader=self.val_loader,
                    save_dir=self.save_dir,
                    save_json=self.is_coco,
                    verbose=True,
                    plots=self.plots,
                    compute_loss=self.compute_loss,
                )
        self.jobs.close()
        LOGGER.info(f"Results saved to {colorstr('bold', self.save_dir)}")


def train(hyp, opt, device):
    """Train once with hyps `hyp` (dict or yaml path); returns (P, R, mAP@.5, mAP@.5:.95, val losses)."""
    return Trainer(hyp, opt, device).fit()


def parse_opt(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=str, default="", help="initial weights path ('' trains from scratch)")
    parser.add_argument("--cfg", type=str, default="", help="model.yaml path, e.g. models/yolov5_SOCA.yaml")
    parser.add_argument("--data", type=str, default=ROOT / "data/shapes.yaml", help="dataset.yaml path")
    parser.add_argument("--hyp", type=str, default=ROOT / "data/hyps/hyp.scratch-low.yaml", help="hyperparameters path")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="total batch size for all GPUs")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    parser.add_argument("--rect", action="store_true", help="rectangular training")
    parser.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training")
    parser.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    parser.add_argument("--noval", action="store_true", help="only validate final epoch")
    parser.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    parser.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    parser.add_argument("--cache", type=str, nargs="?", const="ram", help="--cache images in 'ram' (default) or 'disk'")
    parser.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    parser.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    parser.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    parser.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    parser.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    parser.add_argument("--project", default=ROOT / "runs/train", help="save to project/name")
    parser.add_argument("--name", default="exp", help="save to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="Label smoothing epsilon")
    parser.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    parser.add_argument("--freeze", nargs="+", type=int, default=[0], help="Freeze layers: backbone=10, first3=0 1 2")
    parser.add_argument("--save-period", type=int, default=-1, help="Save checkpoint every x epochs (disabled if < 1)")
    parser.add_argument("--seed", type=int, default=0, help="global training seed")
    parser.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels (bit-identical runs)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    parser.add_argument("--save-safetensors", action="store_true", help="also write best.safetensors (FP16)")
    parser.add_argument("--trust-weights", action="store_true", help="load a .pt even on a torch below 2.10 (CVEs)")
    parser.add_argument("--save-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="DDP parameter, do not modify")
    return parser.parse_args(argv)


def latest_run(search_dir="."):
    """Most recent last*.pt under search_dir (for --resume with no path)."""
    runs = sorted(Path(search_dir).glob("**/last*.pt"), key=os.path.getctime)
    return runs[-1] if runs else None


def resume_options(opt):
    """Options of the run being resumed, read from its opt.yaml, pointing at its last.pt."""
    wanted = opt.resume if isinstance(opt.resume, str) else latest_run(ROOT / "runs/train")
    ckpt = Path(wanted or "")
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume checkpoint '{wanted or 'runs/train/*/weights/last.pt'}' does not exist")
    opt_yaml = ckpt.parent.parent / "opt.yaml"
    if not opt_yaml.is_file():
        raise FileNotFoundError(f"cannot resume {ckpt}: {opt_yaml} with the run's options is missing")
    with open(opt_yaml, errors="ignore") as f:
        saved = yaml.safe_load(f)
    new = argparse.Namespace(**{**vars(parse_opt([])), **saved})
    new.cfg, new.weights, new.resume, new.trust_weights = "", str(ckpt), True, opt.trust_weights
    new.hyp = str(ckpt.parent.parent / "hyp.yaml")
    LOGGER.info(f"Resuming training from {ckpt}")
    return new


def check_options(opt):
    """Resolve data/hyp files (cfg names are resolved by Model: models/ and size letters), pick the run folder."""
    opt.data, opt.hyp = check_file(opt.data), check_yaml(opt.hyp)
    opt.cfg, opt.weights, opt.project = str(opt.cfg), str(opt.weights), str(opt.project)
    if not (opt.cfg or opt.weights):
        opt.cfg = "yolov5s.yaml"
        LOGGER.info(f"No --cfg or --weights given: training {opt.cfg} from scratch (no weights are downloaded)")
    if opt.weights:
        opt.weights = attempt_download(opt.weights)  # a v6.1 release name or an http(s) URL is downloaded
    if opt.evolve:
        if opt.project == str(ROOT / "runs/train"):
            opt.project = str(ROOT / "runs/evolve")
        opt.exist_ok, opt.resume = opt.resume, False
    if not (opt.resume and opt.save_dir):  # a resumed run keeps writing into its own folder
        opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    if RANK in (-1, 0):
        make_run_dir(opt.save_dir, opt.project)
    return opt


def main(opt):
    if RANK in (-1, 0):
        print_args(Path(__file__).stem, opt)
    if opt.resume and not opt.evolve:
        opt = resume_options(opt)
    check_counts(opt)
    set_deterministic(opt.deterministic)
    device = init_ddp(opt)
    opt = check_options(opt)
    opt.save_dir = broadcast_object(opt.save_dir)  # every rank uses rank 0's run folder
    try:
        with RunLock(opt.save_dir) if RANK in (-1, 0) else nullcontext():
            if opt.evolve:
                evolve(opt, lambda hyp: train(hyp, opt, device))
            else:
                train(opt.hyp, opt, device)
    finally:
        if WORLD_SIZE > 1 and dist.is_initialized():
            dist.destroy_process_group()


def run(**kwargs):
    """Python entry point: train.run(data='shapes.yaml', cfg='yolov5n.yaml', imgsz=256, epochs=3)."""
    opt = parse_opt([])
    for k, v in kwargs.items():
        setattr(opt, k, v)
    main(opt)
    return opt


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError, ConnectionError, NonFiniteLossError, WriteError) as e:
        LOGGER.error(f"ERROR: {e}")
        sys.exit(1)
