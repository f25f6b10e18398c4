"""AutoBatch (train.py --batch-size -1): the largest batch that fits 90% of free CUDA memory, as YOLOv5 v6.1."""

from copy import deepcopy

import numpy as np
import torch

from utils.general import LOGGER, colorstr

PREFIX = colorstr("AutoBatch: ")
PROBE_BATCHES = (1, 2, 4, 8, 16)


def check_train_batch_size(model, imgsz=640, fraction=0.9, default=16):
    """Batch size for training model at imgsz: default on CPU, else fitted to fraction of free CUDA memory."""
    LOGGER.info(f"{PREFIX}Computing optimal batch size for --imgsz {imgsz}")
    device = next(model.parameters()).device
    if device.type != "cuda":
        LOGGER.info(f"{PREFIX}CUDA not detected, using default CPU batch-size {default}")
        return default
    model = deepcopy(model).train()
    with torch.autocast("cuda"):
        batches, mem = measure_batches(model, imgsz, device)
    return fit_batch_size(batches, mem, free_memory(device), fraction, default)


def free_memory(device):
    """Bytes this process can still allocate: the driver's free memory plus the allocator's unused cache."""
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    name = torch.cuda.get_device_properties(device).name
    LOGGER.info(
        f"{PREFIX}{str(device).upper()} ({name}) {total / 2**30:.2f}G total, {(free + cached) / 2**30:.2f}G free"
    )
    return free + cached


def measure_batches(model, imgsz, device):
    """Peak extra CUDA memory (bytes) of a forward+backward at each probe batch size; stops at the first OOM."""
    batches, mem = [], []
    for b in PROBE_BATCHES:
        x = torch.zeros(b, 3, imgsz, imgsz, device=device)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            y = model(x)
            sum(t.float().sum() for t in (y if isinstance(y, (list, tuple)) else [y])).backward()
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        batches.append(b)
        mem.append(torch.cuda.max_memory_allocated(device) - base)
        del x
    torch.cuda.empty_cache()
    return batches, mem


def fit_batch_size(batches, mem, free, fraction=0.9, default=16):
    """Fit mem = a * batch + b and solve for the batch that uses fraction of free; default if the fit is unusable."""
    if len(batches) < 2:
        LOGGER.warning(f"{PREFIX}WARNING: fewer than 2 batch sizes fit in memory, using batch-size {default}")
        return default
    a, b = np.polyfit(batches, mem, deg=1)
    if a <= 1e-6 * max(mem):  # flat or falling (up to rounding in the fit)
        LOGGER.warning(f"{PREFIX}WARNING: memory does not grow with batch size, using batch-size {default}")
        return default
    bs = max(int((free * fraction - b) / a), 1)
    LOGGER.info(
        f"{PREFIX}Using batch-size {bs} ({fraction * 100:.0f}% of {free / 2**30:.2f}G free: "
        f"{a / 2**20:.1f}M per image + {b / 2**20:.1f}M)"
    )
    return bs
