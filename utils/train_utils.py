"""Training helpers: optimizer parameter groups, LR schedule and warm-up, early stopping, checkpoint stripping."""

import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

from utils.atomic import WriteError
from utils.checkpoints import save_checkpoint
from utils.general import LOGGER, ROOT, colorstr, one_cycle

HYP_TEMPLATE = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"
MAX_NONFINITE = 10  # consecutive non-finite losses (at most one epoch's worth) before training stops

RESULT_KEYS = [
    "train/box_loss",
    "train/obj_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
    "x/lr0",
    "x/lr1",
    "x/lr2",
]


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
    LOGGER.info(
        f"{colorstr('optimizer:')} {type(optimizer).__name__} with parameter groups "
        f"{len(g0)} weight (no decay), {len(g1)} weight, {len(g2)} bias"
    )
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
            LOGGER.info(
                f"Stopping training early as no improvement observed in last {self.patience} epochs. "
                f"Best results observed at epoch {self.best_epoch}, best model saved as best.pt.\n"
                f"To update EarlyStopping(patience={self.patience}) pass a new patience value, "
                f"i.e. `python train.py --patience 300` or use `--patience 0` to disable EarlyStopping."
            )
        return stop


def training_checkpoint(epoch, best_fitness, model, ema, optimizer):
    """The v6.1 checkpoint dict (FP16 model and EMA with NCHW weights as v6.1 expects, optimizer state)."""
    from copy import deepcopy

    nchw = torch.contiguous_format
    return {
        "epoch": epoch,
        "best_fitness": best_fitness,
        "model": deepcopy(model).half().to(memory_format=nchw),
        "ema": deepcopy(ema.ema).half().to(memory_format=nchw),
        "updates": ema.updates,
        "optimizer": optimizer.state_dict(),
        "wandb_id": None,
        "date": datetime.now().isoformat(),
    }


def stripped(ckpt):
    """A finished checkpoint: a new dict with the FP16 EMA model of ckpt and no optimizer or training state."""
    x = dict(ckpt)
    if x.get("ema"):
        x["model"] = x["ema"]
    for k in ("optimizer", "best_fitness", "wandb_id", "ema", "updates", "exact"):
        x[k] = None
    x["epoch"] = -1
    x["model"].half()
    for p in x["model"].parameters():
        p.requires_grad = False
    return x


def strip_optimizer(x, f):
    """Save x, a finished checkpoint (stripped() of the dict last saved to f, or of f loaded), to f; returns x.

    Only its FP16 EMA model is kept (optimizer and training state dropped).
    """
    save_checkpoint(x, f)
    LOGGER.info(f"Optimizer stripped from {f}, {Path(f).stat().st_size / 1e6:.1f}MB")
    return x


def warmup_iterations(hyp, nb):
    """Number of warm-up iterations as v6.1: warmup_epochs * batches per epoch, at least 1000."""
    return max(round(hyp["warmup_epochs"] * nb), 1000)


def warmup_values(ni, nw, hyp, initial_lrs, lf_epoch):
    """Per-group lr and the momentum at warm-up iteration ni of nw.

    The bias group (index 2) falls from warmup_bias_lr, the others rise from 0, all towards initial_lr * lf(epoch);
    momentum rises from warmup_momentum to momentum.
    """
    xi = [0, nw]
    lrs = [
        float(np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 2 else 0.0, lr0 * lf_epoch]))
        for j, lr0 in enumerate(initial_lrs)
    ]
    return lrs, float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))


def multi_scale_size(imgsz, gs, rng):
    """A random training size in [0.5, 1.5] x imgsz, a multiple of the grid stride (rng: a numpy Generator)."""
    return int(rng.integers(int(imgsz * 0.5), int(imgsz * 1.5) + gs)) // gs * gs


def scaled_shape(shape, sz, gs):
    sf = sz / max(shape)
    return [math.ceil(x * sf / gs) * gs for x in shape]


class NonFiniteLossError(RuntimeError):
    """Training stopped after a run of NaN/inf losses; the saved checkpoints are the last finite ones."""


def check_counts(opt):
    """--epochs must be positive; --batch-size too, or -1 for AutoBatch."""
    if opt.batch_size < 1 and opt.batch_size != -1:
        raise ValueError(f"--batch-size {opt.batch_size}: must be at least 1 (-1: AutoBatch), e.g. --batch-size 16")
    if opt.epochs < 1:
        raise ValueError(f"--epochs {opt.epochs}: must be at least 1, e.g. --epochs 300")


def check_hyp(hyp, source):
    """Every key of data/hyps/hyp.scratch-low.yaml must be in the hyps (anchors is optional there too)."""
    if not isinstance(hyp, dict):
        raise ValueError(f"{source}: hyperparameters must be a yaml mapping of name: value, got {type(hyp).__name__}")
    required = yaml.safe_load(HYP_TEMPLATE.read_text())
    missing = [k for k in required if k not in hyp]
    if missing:
        raise ValueError(
            f"{source}: hyperparameter '{missing[0]}' is missing"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
            f"copy it from {HYP_TEMPLATE.relative_to(ROOT)}"
        )
    return hyp


def make_run_dir(save_dir, project):
    """Create the run folder; a clear error when --project is not writable."""
    try:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(save_dir) / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"--project {project}: cannot write the run folder {save_dir} ({e.strerror or e}); "
            f"pass a writable --project"
        ) from None


class RunLock:
    """`<run>/.lock` holding the owner's pid: a second live run into the same folder is refused."""

    def __init__(self, save_dir):
        self.path = Path(save_dir) / ".lock"

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = self._owner()
            if pid and pid != os.getpid() and _alive(pid):
                raise ValueError(
                    f"{self.path.parent} is in use by another training run (pid {pid}, {self.path}); "
                    f"use another --name, or wait for it to finish"
                ) from None
            LOGGER.warning(f"WARNING: {self.path}: taking over the lock of a run that is gone (pid {pid})")
            self.path.unlink(missing_ok=True)
            return self.__enter__()
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return self

    def _owner(self):
        try:
            return int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def __exit__(self, *exc):
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_finite_model(model):
    """True when every parameter and buffer is finite (a NaN model is never saved over a good one)."""
    return all(torch.isfinite(t).all() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def write_failure(e, save_dir, last, saved_epoch):
    """One line for a failed write during training (e: a WriteError, or a disk-full OSError from elsewhere): the
    file, the reason and the last checkpoint written whole (last, at saved_epoch; None when none was)."""
    reason = str(e) if isinstance(e, WriteError) else f"cannot write {e.filename or save_dir}: {e.strerror}"
    intact = f"{last} (epoch {saved_epoch})" if saved_epoch is not None else "none was saved yet"
    return WriteError(f"{reason}; last intact checkpoint: {intact}")
