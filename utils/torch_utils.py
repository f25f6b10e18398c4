"""PyTorch helpers: devices, DDP set-up, timing, BN fusion, memory reuse, model summary and FLOP counting, EMA."""

import ctypes
import ctypes.util
import functools
import math
import os
import sys
import time
from copy import deepcopy

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from utils.general import LOGGER

LOCAL_RANK = int(os.getenv("LOCAL_RANK", -1))
RANK = int(os.getenv("RANK", -1))
WORLD_SIZE = int(os.getenv("WORLD_SIZE", 1))


def select_device(device="", batch_size=0):
    """'' (best available), 'cpu', '0' or '0,1,2,3' -> torch.device; checks the request can be met."""
    s = f"YOLOv5 attention zoo, torch {torch.__version__} "
    device = str(device).strip().lower().replace("cuda:", "").replace("none", "")
    cpu = device == "cpu"
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif device:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        if not (torch.cuda.is_available() and torch.cuda.device_count() >= len(device.replace(",", ""))):
            raise ValueError(
                f"Invalid CUDA '--device {device}' requested, use '--device cpu' or pass valid CUDA device(s)"
            )
    cuda = not cpu and torch.cuda.is_available()
    if cuda:
        devices = device.split(",") if device else "0"
        n = len(devices)
        if n > 1 and batch_size > 0 and batch_size % n:
            raise ValueError(f"batch-size {batch_size} not multiple of GPU count {n}")
        for i, d in enumerate(devices):
            p = torch.cuda.get_device_properties(i)
            s += f"{'' if i == 0 else ' ' * len(s)}CUDA:{d} ({p.name}, {p.total_memory / 1024**2:.0f}MiB)\n"
    else:
        s += "CPU\n"
    LOGGER.info(s.rstrip())
    return torch.device("cuda:0" if cuda else "cpu")


def init_ddp(opt):
    """torch.distributed.run sets LOCAL_RANK: one process per device (gloo on CPU, nccl on CUDA)."""
    device = select_device(opt.device, batch_size=opt.batch_size)
    if LOCAL_RANK == -1:
        return device
    if opt.batch_size == -1:
        raise ValueError("--batch-size -1 (AutoBatch) is not supported with DDP: pass a batch size")
    if opt.batch_size % WORLD_SIZE:
        raise ValueError(f"--batch-size {opt.batch_size} must be a multiple of WORLD_SIZE {WORLD_SIZE}")
    if opt.evolve:
        raise ValueError("--evolve is not compatible with DDP")
    if device.type == "cuda":
        torch.cuda.set_device(LOCAL_RANK)
        device = torch.device("cuda", LOCAL_RANK)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def broadcast_object(obj):
    """Rank 0's object on every DDP rank (no-op outside DDP)."""
    if RANK == -1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def time_sync():
    """time.time() after waiting for pending CUDA work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()


def is_parallel(model):
    return type(model) in (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)


def de_parallel(model):
    """The plain model inside DP/DDP."""
    return model.module if is_parallel(model) else model


def initialize_weights(model):
    """YOLOv5 defaults: BN eps 1e-3 momentum 0.03, in-place activations."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


@torch.no_grad()
def fuse_conv_and_bn(conv, bn):
    """One Conv2d equal to conv followed by bn (eval statistics)."""
    fused = (
        nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
        )
        .requires_grad_(False)
        .to(conv.weight.device)
    )
    w, b = conv.weight.double(), conv.bias.double() if conv.bias is not None else None  # fold in float64
    scale = bn.weight.double() / torch.sqrt(bn.eps + bn.running_var.double())
    fused.weight.copy_((w.reshape(conv.out_channels, -1) * scale.view(-1, 1)).view(fused.weight.shape))
    b_conv = torch.zeros_like(scale) if b is None else b
    fused.bias.copy_((b_conv - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


def channels_last(model):
    """Store every Conv2d weight NHWC, so oneDNN/cuDNN convolutions run (and hand on) NHWC maps; returns model."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return model


@functools.cache
def cpu_has_bf16():
    """True when the CPU computes bfloat16 natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo, Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def keep_freed_memory():
    """Make glibc keep freed memory for reuse, so large tensors come from the heap instead of fresh kernel pages.

    By default glibc serves every allocation above its mmap threshold (32 MB at most) with new pages and unmaps them
    on free, so each large activation of each forward and backward pays page faults and page zeroing again: 1.6x of a
    yolov5n training step at img 320, batch 16, and of batch-32 inference, on a 2-core CPU (README, Speed). Freed
    memory then stays with the process (its RSS stays at its peak). Linux/glibc only; True when applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def intersect_dicts(da, db, exclude=()):
    """Items of da whose key is in db with the same shape, skipping keys containing an excluded word."""
    return {k: v for k, v in da.items() if k in db and not any(x in k for x in exclude) and v.shape == db[k].shape}


def _stride_and_channels(model):
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    ch = model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3
    return stride, ch


def _input_shape(model, img_size):
    stride, ch = _stride_and_channels(model)
    hw = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
    return (1, ch, *[math.ceil(x / stride) * stride for x in hw])


def legacy_gflops(model, img_size=640):
    """v6.1's figure: thop's MACs x 2 of one forward on a stride-sized input, scaled to img_size.

    thop counts module calls (Conv, BatchNorm, Linear, pools, ...), so matmul/bmm/einsum inside blocks are missed.
    """
    from thop import profile

    stride, ch = _stride_and_channels(model)
    hw = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
    p = next(model.parameters())
    x = torch.zeros(1, ch, stride, stride, device=p.device, dtype=p.dtype)
    macs = profile(deepcopy(model), inputs=(x,), verbose=False)[0]
    return macs * 2 / 1e9 * hw[0] / stride * hw[1] / stride


def _device(model):
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _layer_inputs(model, x):
    """(layer, its input) for every yaml layer of model in one forward of x; list inputs are copied
    (Detect rewrites its input list in place)."""
    seen = []

    def keep(m, inputs):
        a = inputs[0]
        seen.append((m, list(a) if isinstance(a, list) else a))

    handles = [m.register_forward_pre_hook(keep) for m in model.model]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def profile_layers(model, x, n=10):
    """`python models/yolo.py --profile`: per yaml layer, the time of one forward (mean of n), thop GFLOPs, params.

    Logs the table and returns its rows (ms, GFLOPs, params, module type).
    """
    from thop import profile

    LOGGER.info(f"{'time (ms)':>10s} {'GFLOPs':>10s} {'params':>10s}  module")
    rows = []
    for m, inp in _layer_inputs(model, x):
        args = (list(inp) if isinstance(inp, list) else inp,)
        gflops = profile(deepcopy(m), inputs=args, verbose=False)[0] * 2 / 1e9
        with torch.no_grad():
            t = time_sync()
            for _ in range(n):
                m(list(inp) if isinstance(inp, list) else inp)
            dt = (time_sync() - t) * 1000 / n
        rows.append((dt, gflops, sum(p.numel() for p in m.parameters()), m.type))
        LOGGER.info("%10.2f %10.2f %10.0f  %s" % rows[-1])
    LOGGER.info(f"{sum(r[0] for r in rows):10.2f} {'-':>10s} {'-':>10s}  Total")
    return rows


def exact_flops(model, img_size=640, batch_size=1):
    """FLOPs of one forward pass at the real input size, counted by torch.utils.flop_counter on meta tensors.

    The model is copied with its parameters and buffers on the meta device, so no arithmetic runs and no weights
    are copied; a module that cannot run on meta tensors raises (model_info turns that into a warning).
    """
    shape = _input_shape(model, img_size)
    shape = (batch_size, *shape[1:])
    memo = {id(t): _meta_like(t) for t in (*model.parameters(), *model.buffers())}
    m = deepcopy(model, memo).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.zeros(shape, device="meta", dtype=next(model.parameters()).dtype))
    return counter.get_total_flops()


def _meta_like(t):
    meta = torch.empty_like(t, device="meta")
    return nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta


def model_info(model, verbose=False, img_size=640):
    """Print the v6.1 summary line, then the exact GFLOPs at the real input size."""
    n_p = sum(x.numel() for x in model.parameters())
    n_g = sum(x.numel() for x in model.parameters() if x.requires_grad)
    if verbose:
        LOGGER.info(
            f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} {'mu':>10} {'sigma':>10}"
        )
        for i, (name, p) in enumerate(model.named_parameters()):
            name = name.replace("module_list.", "")
            LOGGER.info(
                "%5g %40s %9s %12g %20s %10.3g %10.3g"
                % (i, name, p.requires_grad, p.numel(), list(p.shape), p.mean(), p.std() if p.numel() > 1 else 0)
            )
    fs = ""
    try:
        fs = f", {legacy_gflops(model, img_size):.1f} GFLOPs"
    except (ImportError, RuntimeError, TypeError, ValueError, StopIteration) as e:
        LOGGER.warning(f"WARNING: GFLOPs not computed: {e}")
    LOGGER.info(f"Model Summary: {len(list(model.modules()))} layers, {n_p} parameters, {n_g} gradients{fs}")
    if fs:
        shape = _input_shape(model, img_size)
        try:
            LOGGER.info(
                f"Exact: {exact_flops(model, img_size) / 1e9:.2f} GFLOPs at {shape[2]}x{shape[3]} "
                "(torch.utils.flop_counter: every conv, matmul and bmm, attention blocks included)"
            )
        except (RuntimeError, NotImplementedError, TypeError) as e:
            LOGGER.warning(f"WARNING: exact GFLOPs not computed (a module does not run on meta tensors): {e}")


class ModelEMA:
    """Exponential moving average of weights with a warm-up ramp d = decay (1 - exp(-updates / 2000))."""

    def __init__(self, model, decay=0.9999, updates=0):
        self.ema = deepcopy(de_parallel(model)).eval()
        self.updates = updates
        self.decay = lambda x: decay * (1 - math.exp(-x / 2000))
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def update(self, model):
        with torch.no_grad():
            self.updates += 1
            d = self.decay(self.updates)
            msd = de_parallel(model).state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v *= d
                    v += (1 - d) * msd[k].detach()

    def update_attr(self, model, include=(), exclude=("process_group", "reducer")):
        """Copy plain attributes (names, nc, hyp, ...) from model."""
        for k, v in model.__dict__.items():
            if (len(include) and k not in include) or k.startswith("_") or k in exclude:
                continue
            setattr(self.ema, k, v)
