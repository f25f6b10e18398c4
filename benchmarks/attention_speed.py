"""Forward+backward time and peak memory of every attention block at the P3, P4, P5 maps of an input, as ratios to SE.

Usage:
    python benchmarks/attention_speed.py --img 640 --scale l --batch-size 8 --device cuda
    python benchmarks/attention_speed.py --img 64 --scale n --runs 2   # a quick CPU check

Channels are the yolov5 P3/P4/P5 widths (256/512/1024 at l) times the --scale width multiple. Every zoo block in
models/registry.py runs; conv replacements (SCConv, SplitAttn, DynamicConv) run as 3x3, stride 1, c -> c. Peak memory
is the extra CUDA memory allocated on a GPU, or on CPU the extra peak resident memory of a spawned process that runs
only that block (Linux). GFLOP/s is the block's exact forward+backward FLOP count (torch.utils.flop_counter: convs,
matmuls, bmm) over its time; the line above the table gives a plain 3x3 conv's (c -> c, SiLU) at the same maps,
the rate the CPU/GPU reaches on the arithmetic YOLOv5 is made of.
"""

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.config import SCALES
from models.registry import Channels, build_block, entries
from utils.general import make_divisible

LEVELS = (("P3", 8, 256), ("P4", 16, 512), ("P5", 32, 1024))
MIN_MIB = 1.0  # below this SE's CPU peak is allocator noise (pages already resident): no memory ratio
ENTRIES = {e.name: e for e in entries(attention=True)}  # every registered zoo block, in registration order
BLOCKS = ["SE", *(n for n in ENTRIES if n != "SE")]
PLAIN = "Conv"  # the GFLOP/s reference: a plain 3x3 conv + SiLU, not a zoo block


def make_block(name, c):
    """Block `name` mapping c -> c channels; conv replacements as 3x3, stride 1 (their Conv-like signature)."""
    if name == PLAIN:
        return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.SiLU())
    return build_block(name, c) if ENTRIES[name].channels == Channels.KEEP else build_block(name, c, c, 3, 1)


def parse_opt(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img", type=int, default=640, help="input size whose P3/P4/P5 maps are benchmarked")
    p.add_argument("--scale", choices=list(SCALES), default="l", help="model size whose width multiple sets channels")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--runs", type=int, default=10, help="timed forward+backward passes")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes first (at least 1)")
    p.add_argument("--blocks", nargs="+", default=BLOCKS, choices=BLOCKS, help="blocks to run")
    opt = p.parse_args(argv)
    if opt.runs < 1 or opt.warmup < 1 or opt.batch_size < 1:
        p.error("--runs, --warmup and --batch-size must be >= 1")
    if opt.img < 32 or opt.img % 32:
        p.error(f"--img must be a multiple of 32 (the P5 stride), got {opt.img}")
    if "SE" not in opt.blocks:
        opt.blocks.insert(0, "SE")  # the reference of every ratio
    return opt


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fwd_bwd_flops(block, x):
    """Exact FLOPs of one forward+backward of block on x (every conv, matmul and bmm, gradients included)."""
    counter = FlopCounterMode(display=False)
    with counter:
        block(x).sum().backward()
    return counter.get_total_flops()


def block_flops(name, c, hw, opt):
    """fwd_bwd_flops of block `name` on a (batch, c, *hw) input (counted in this process: no fork needed)."""
    x = torch.randn(opt.batch_size, c, *hw, device=opt.device, requires_grad=True)
    return fwd_bwd_flops(make_block(name, c).to(opt.device).train(), x)


def time_and_memory(name, c, hw, opt):
    """(ms per forward+backward, peak extra MiB) of block `name` with c channels on a (batch, c, *hw) input."""
    device = torch.device(opt.device)
    block = make_block(name, c).to(device).train()
    x = torch.randn(opt.batch_size, c, *hw, device=device, requires_grad=True)
    for _ in range(opt.warmup):  # also loads kernels and allocates the gradients, so neither counts below
        block(x).sum().backward()
    _sync(device)
    start_mib = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(opt.runs):
        block(x).sum().backward()
    _sync(device)
    ms = (time.perf_counter() - t) / opt.runs * 1e3
    if device.type == "cuda":
        mib = torch.cuda.max_memory_allocated(device) / 2**20 - start_mib
    else:
        mib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_mib, 0.0)
    return ms, mib


def _child(conn, args):
    try:
        conn.send(time_and_memory(*args))
    except Exception as e:
        conn.send(RuntimeError(f"attention_speed.py: {args[0]} with {args[1]} channels on {args[2]}: {e}"))
    conn.close()


def measure(name, c, hw, opt):
    """time_and_memory in a fresh process on CPU (its peak RSS is this block's alone), in place on CUDA.

    The process is spawned, not forked: a fork after this process ran OpenMP work (the FLOP counts) can hang.
    """
    if torch.device(opt.device).type == "cuda":
        return time_and_memory(name, c, hw, opt)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, (name, c, hw, opt)))
    p.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = RuntimeError(f"attention_speed.py: {name}: the measuring process died (out of memory?)")
    p.join()
    if isinstance(result, Exception):
        raise result
    return result


def markdown_table(results, opt):
    """Rows per block: time and memory as ratios to SE (the SE row holds the absolute values), and GFLOP/s."""
    head = "| block | " + " | ".join(f"{lv} time | {lv} memory | {lv} GFLOP/s" for lv, _, _ in LEVELS) + " |"
    lines = [head, "|" + " --- |" * (1 + 3 * len(LEVELS))]
    for name in opt.blocks:
        cells = []
        for lv, _, _ in LEVELS:
            (ms, mib, gflops), (se_ms, se_mib, _) = results[name, lv], results["SE", lv]
            if name == "SE":
                cells += [f"{ms:.2f} ms", f"{mib:.1f} MiB"]
            else:
                cells += [f"{ms / se_ms:.2f}x", f"{mib / se_mib:.2f}x" if se_mib >= MIN_MIB else "n/a"]
            cells.append(f"{gflops:.3g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(opt):
    """Measure every block and the plain Conv at every level; return the Conv's GFLOP/s line and the table."""
    width = SCALES[opt.scale][1]
    results = {}
    for lv, stride, c in LEVELS:
        ch, hw = make_divisible(c * width, 8), (opt.img // stride, opt.img // stride)
        for name in [PLAIN, *opt.blocks]:
            ms, mib = measure(name, ch, hw, opt)
            results[name, lv] = ms, mib, block_flops(name, ch, hw, opt) / ms / 1e6
    plain = ", ".join(f"{lv} {results[PLAIN, lv][2]:.3g}" for lv, _, _ in LEVELS)
    return f"plain conv 3x3 c -> c + SiLU, GFLOP/s: {plain}\n\n" + markdown_table(results, opt)


def main(argv=None):
    opt = parse_opt(argv)
    if torch.device(opt.device).type == "cpu" and not sys.platform.startswith("linux"):
        sys.exit("attention_speed.py: CPU memory is measured with /proc (Linux only); use --device cuda")
    channels = [make_divisible(c * SCALES[opt.scale][1], 8) for _, _, c in LEVELS]
    print(
        f"img {opt.img}, scale {opt.scale} (channels {channels}), batch {opt.batch_size}, device {opt.device}, "
        f"{opt.runs} runs, torch {torch.__version__}\n"
    )
    print(run(opt))


if __name__ == "__main__":
    main()
