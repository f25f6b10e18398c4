"""Speed levers keep numerics and file formats (channels_last weights, NCHW checkpoints, fused CL models), and the
glibc setting that reuses freed memory takes effect."""

import subprocess
import sys
from copy import deepcopy

import pytest
import torch

from benchmarks.compare import quiet_logging
from models.yolo import Model
from utils.torch_utils import ModelEMA, channels_last
from utils.train_utils import smart_optimizer, training_checkpoint

from conftest import ROOT

CL = torch.channels_last


@pytest.fixture(scope="module")
def model():
    with quiet_logging():
        return Model("yolov5n.yaml", nc=3).eval()


def _rel_err(a, b):
    return ((a - b).abs() / (b.abs() + 1)).max().item()


def test_channels_last_keeps_outputs_and_converts_every_conv(model):
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)[0]
        m = channels_last(deepcopy(model))
        out = m(x)[0]
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=CL) for c in convs)
    assert _rel_err(out, ref) < 1e-5


def test_fuse_of_a_channels_last_model_matches_unfused(model):
    x = torch.rand(1, 3, 64, 64)
    m = channels_last(deepcopy(model))
    with torch.no_grad(), quiet_logging():
        ref = m(x)[0]
        out = m.fuse()(x)[0]
    assert _rel_err(out, ref) < 1e-5


def test_training_checkpoint_stores_nchw_weights_for_v61(model):
    m = channels_last(deepcopy(model))
    with quiet_logging():
        ckpt = training_checkpoint(0, 0.0, m, ModelEMA(m), smart_optimizer(m))
    assert any(p.is_contiguous(memory_format=CL) and not p.is_contiguous() for p in m.parameters())
    for key in ("model", "ema"):
        assert all(p.is_contiguous() for p in ckpt[key].parameters())
        assert all(v.dtype == torch.float16 for v in ckpt[key].state_dict().values() if v.is_floating_point())


LARGE_TENSOR_REGION = """
import torch
from utils.torch_utils import keep_freed_memory

def region(t):
    p = t.data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= p < hi:
            return fields[5] if len(fields) > 5 else "anonymous mmap"

before = region(torch.empty(64 << 20, dtype=torch.uint8))
applied = keep_freed_memory()
print(before, applied, region(torch.empty(64 << 20, dtype=torch.uint8)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and /proc/self/maps")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    out = subprocess.run([sys.executable, "-c", LARGE_TENSOR_REGION], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # a 64 MB tensor: by default its own fresh mmap (page faults on every use), then a reusable heap block
    assert out.stdout.split() == ["anonymous", "mmap", "True", "[heap]"]
