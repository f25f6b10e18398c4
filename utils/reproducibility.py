"""Reproducible training: random streams keyed by (seed, purpose, epoch, ...), deterministic kernels, exact resume.

A run's randomness never comes from a process-wide stream, so neither the number of dataloader workers, their
scheduling nor a stop-and-resume can change what a sample, a batch size or an image choice is.
"""

import os

import numpy as np
import torch

# purposes of the keyed streams: the same (seed, epoch) gives independent draws for each
AUGMENT, MULTI_SCALE, IMAGE_WEIGHTS = 0, 1, 2


def seeded_rng(seed, purpose, *keys):
    """A numpy Generator that is a pure function of (seed, purpose, *keys), e.g. (seed, AUGMENT, epoch, index)."""
    return np.random.default_rng([int(k) % 2**63 for k in (seed, purpose, *keys)])


def set_deterministic(enabled):
    """With --deterministic: deterministic torch/cuDNN/cuBLAS kernels (bit-identical CUDA runs, slower)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn for ops that have no deterministic kernel


def exact_state(model, ema, scaler, last_opt_step, maps, best_epoch):
    """What an exact --resume needs beyond the v6.1 checkpoint: FP32 weights and EMA, step counter, AMP scale."""
    return {
        "model": _cpu_copy(model.state_dict()),
        "ema": _cpu_copy(ema.ema.state_dict()),
        "scaler": scaler.state_dict(),
        "last_opt_step": int(last_opt_step),
        "maps": [float(x) for x in maps],
        "best_epoch": int(best_epoch),
    }


def _cpu_copy(state_dict):
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}
