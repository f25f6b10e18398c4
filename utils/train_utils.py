"""Training helpers: optimizer parameter groups, LR schedule, early stopping, checkpoint stripping, results logging."""
import csv
import math
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn

from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.general import LOGGER, colorstr, one_cycle

RESULT_KEYS = ["train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
               "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
               "x/lr0", "x/lr1", "x/lr2"]


def parameter_groups(model):
    """v6.1 groups: (BatchNorm weights and other 0/1-d tensors: no decay, weights: decay, biases: no decay)."""
    no_decay, decay, bias = [], [], []
    for m in model.modules():
        if hasattr(m, "bias") and isinstance(m.bias, nn.Parameter):
            bias.append(m.bias)
        if isinstance(m, nn.BatchNorm2d):
            no_decay.append(m.weight)
        elif hasattr(m, "weight") and isinstance(m.weight, nn.Parameter):
            decay.append(m.weight)
    seen = {id(p) for p in no_decay + decay + bias}
    for p in model.parameters():  # attention blocks' own parameters (gamma, beta, ...)
        if id(p) not in seen:
            (decay if p.ndim > 1 else no_decay).append(p)
            seen.add(id(p))
    return no_decay, decay, bias


def smart_optimizer(model, name="SGD", lr=0.01, momentum=0.937, decay=1e-5):
    """SGD (Nesterov), Adam or AdamW over the three parameter groups."""
    g0, g1, g2 = parameter_groups(model)
    if name == "Adam":
        optimizer = torch.optim.Adam(g0, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(g0, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    elif name == "SGD":
        optimizer = torch.optim.SGD(g0, lr=lr, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"optimizer '{name}' not supported: use SGD, Adam or AdamW")
    optimizer.add_param_group({"params": g1, "weight_decay": decay})
    optimizer.add_param_group({"params": g2})
    LOGGER.info(f"{colorstr('optimizer:')} {type(optimizer).__name__} with parameter groups "
                f"{len(g0)} weight (no decay), {len(g1)} weight, {len(g2)} bias")
    return optimizer


def lr_lambda(epochs, lrf, cos_lr=False):
    """Per-epoch LR factor: linear from 1 to lrf, or a cosine ramp with --cos-lr."""
    if cos_lr:
        return one_cycle(1, lrf, epochs)
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs."""

    def __init__(self, patience=30):
        self.best_fitness = 0.0
        self.best_epoch = 0
        self.patience = patience or float("inf")
        self.possible_stop = False

    def __call__(self, epoch, fitness):
        if fitness >= self.best_fitness:
            self.best_epoch = epoch
            self.best_fitness = fitness
        delta = epoch - self.best_epoch
        self.possible_stop = delta >= (self.patience - 1)
        stop = delta >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {self.patience} epochs. "
                        f"Best results observed at epoch {self.best_epoch}, best model saved as best.pt.\n"
                        f"To update EarlyStopping(patience={self.patience}) pass a new patience value, "
                        f"i.e. `python train.py --patience 300` or use `--patience 0` to disable EarlyStopping.")
        return stop


def training_checkpoint(epoch, best_fitness, model, ema, optimizer):
    """The v6.1 checkpoint dict (FP16 model and EMA with NCHW weights as v6.1 expects, optimizer state)."""
    from copy import deepcopy

    nchw = torch.contiguous_format
    return {"epoch": epoch, "best_fitness": best_fitness, "model": deepcopy(model).half().to(memory_format=nchw),
            "ema": deepcopy(ema.ema).half().to(memory_format=nchw), "updates": ema.updates, "optimizer": optimizer.state_dict(),
            "wandb_id": None, "date": datetime.now().isoformat()}


def strip_optimizer(f):
    """Keep only the FP16 EMA model in a finished checkpoint (optimizer and training state dropped)."""
    x = load_checkpoint(f)
    if x.get("ema"):
        x["model"] = x["ema"]
    for k in ("optimizer", "best_fitness", "wandb_id", "ema", "updates"):
        x[k] = None
    x["epoch"] = -1
    x["model"].half()
    for p in x["model"].parameters():
        p.requires_grad = False
    save_checkpoint(x, f)
    LOGGER.info(f"Optimizer stripped from {f}, {Path(f).stat().st_size / 1e6:.1f}MB")


class ResultsLogger:
    """results.csv in v6.1 columns, plus TensorBoard scalars when tensorboard is installed."""

    def __init__(self, save_dir, enabled=True):
        self.csv = Path(save_dir) / "results.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(save_dir))
                LOGGER.info(f"{colorstr('TensorBoard: ')}Start with 'tensorboard --logdir {Path(save_dir).parent}'")
            except ImportError:
                pass

    def log_epoch(self, epoch, values, extra=None):
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["%20s" % k for k in ["epoch", *RESULT_KEYS]])
            w.writerow([f"{epoch:>20}", *(f"{float(v):20.5g}" for v in values)])
        if self.tb:
            for k, v in {**dict(zip(RESULT_KEYS, values)), **(extra or {})}.items():
                self.tb.add_scalar(k, float(v), epoch)

    def close(self):
        if self.tb:
            self.tb.close()


def warmup_iterations(hyp, nb):
    """Number of warm-up iterations: warmup_epochs * batches, at least 100 (v6.1)."""
    return max(round(hyp["warmup_epochs"] * nb), 100)


def multi_scale_size(imgsz, gs, rng):
    """A random training size in [0.5, 1.5] x imgsz, a multiple of the grid stride."""
    return int(rng.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + gs)) // gs * gs


def scaled_shape(shape, sz, gs):
    sf = sz / max(shape)
    return [math.ceil(x * sf / gs) * gs for x in shape]
