"""Start-up cost: the scripts import no heavy optional package; the lazily loaded replacements equal the originals."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from utils.boxes import nms_kernel
from utils.metrics import box_iou

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "torch._dynamo", "scipy", "matplotlib", "sympy", "pandas", "tensorboard")


@pytest.mark.parametrize("script", ["train", "val", "detect"])
def test_scripts_import_no_heavy_package(script):
    code = f"import sys; import {script}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"import {script} pulled in: {r.stdout.strip()}"


def _boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 300
    return torch.cat((xy, xy + torch.rand(n, 2, generator=generator) * 100 + 1), 1)


def test_nms_kernel_is_torchvisions(tmp_path):
    g = torch.Generator().manual_seed(0)
    boxes, scores = _boxes(500, g), torch.rand(500, generator=g)
    for iou in (0.3, 0.45, 0.6):
        assert torch.equal(nms_kernel()(boxes, scores, iou), torchvision.ops.nms(boxes, scores, iou))
    torch.save((boxes, scores), tmp_path / "boxes.pt")
    code = (  # a fresh process: the kernel comes from the ops library, torchvision itself is never imported
        "import sys, torch; from utils.boxes import nms_kernel; "
        f"b, s = torch.load({str(tmp_path / 'boxes.pt')!r}); keep = nms_kernel()(b, s, 0.45); "
        "print('torchvision' in sys.modules, keep.tolist())"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(" ", 1) == ["False", f"{torchvision.ops.nms(boxes, scores, 0.45).tolist()}\n"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,m", [(0, 4), (5, 0), (40, 70)])
def test_box_iou_equals_torchvision(dtype, n, m):
    g = torch.Generator().manual_seed(n + m)
    a, b = _boxes(n, g).to(dtype), _boxes(m, g).to(dtype)
    ours, theirs = box_iou(a, b), torchvision.ops.box_iou(a, b)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
