"""The registry as the only list: blocks found by file, one factory, placements as data, C3 with any block inside."""

import shutil
import subprocess
import sys

import pytest
import torch

from models.common import C3, C3Attention
from models.config import ModelConfigError, load_model_yaml
from models.registry import REGISTRY, Channels, build_block, entries
from models.yolo import Model
from utils.torch_utils import exact_flops
from utils.transfer import transfer_weights

from conftest import ROOT, captured_log, quiet_model

KEEP = [e.name for e in entries(attention=True) if e.channels is Channels.KEEP]
PROBE = '''"""A probe gate: one decorated class in a new file, nothing else edited."""

import torch.nn as nn

from models.placement import BEFORE_SPPF
from models.registry import Channels, register


@register("ProbeGate", channels=Channels.KEEP, placement=BEFORE_SPPF)
class ProbeGate(nn.Module):
    """A learned per-channel gate (Probe et al., 2026, the README's example)."""

    def __init__(self, c1, c2):
        super().__init__()
        self.fc = nn.Conv2d(c1, c2, 1)

    def forward(self, x):
        return x * self.fc(x.mean((2, 3), keepdim=True)).sigmoid()
'''
CHECK = """
import models.common
from models.registry import entries
from models.yolo import Model
assert models.common.ProbeGate.__name__ == "ProbeGate"
assert "ProbeGate" in {e.name for e in entries(attention=True)}
m = Model("yolov5n_ProbeGate.yaml")
assert type(m.model[9]).__name__ == "ProbeGate"
print("probe ok")
"""


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_adding_a_block_is_one_file_as_the_readme_says(tmp_path):
    """The README's 'Adding a block' steps on a copy of the project: the file, then the generator, then the tests."""
    for d in ("models", "utils"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("data", "__pycache__"))
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data")  # read only, as in every test
    for f in ("README.md", "pytest.ini"):
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / "models" / "attention" / "probe_gate.py").write_text(PROBE)
    gen = _run(["-m", "models.variants", "--write"], tmp_path)
    assert gen.returncode == 0 and "wrote: models/yolov5_ProbeGate.yaml" in gen.stdout, gen.stdout + gen.stderr
    assert "`ProbeGate`" in (tmp_path / "README.md").read_text()  # the zoo table row
    assert _run(["-c", CHECK], tmp_path).stdout.strip().endswith("probe ok")
    ids = _run(["-m", "pytest", "--collect-only", "-q", "tests/test_attention.py", "-k", "ProbeGate"], tmp_path)
    assert sum("ProbeGate" in line for line in ids.stdout.splitlines()) >= 10, ids.stdout[-2000:]


def test_registry_reads_import_every_block_file():
    files = {p.stem for p in (ROOT / "models" / "attention").glob("*.py")} - {"__init__", "helpers"}
    modules = {e.cls.__module__.rsplit(".", 1)[1] for e in entries(attention=True)}
    assert modules <= files and all(f"models.attention.{f}" in sys.modules for f in files)


def test_build_block_is_the_one_factory():
    for name in KEEP:
        block = build_block(name, 32)
        assert isinstance(block, REGISTRY[name].cls)
        assert block(torch.randn(1, 32, 5, 4)).shape == (1, 32, 5, 4)
    se = build_block("SElayer", 64, reduction=4)  # aliases and keywords
    assert se.fc[0].out_channels == 16
    with pytest.raises(KeyError):
        build_block("NoSuchBlock", 16)


def test_c3_names_resolve_only_for_channel_keeping_blocks():
    assert REGISTRY["C3SE"].cls is C3Attention and REGISTRY["C3SE"].kwargs == {"block": "SE"}
    assert REGISTRY["C3SElayer"].kwargs == {"block": "SE"}  # an alias inside C3 names the block
    for name in ("C3DynamicConv", "C3Conv", "C3Nothing", "C3"):
        assert REGISTRY.get(name) is None or REGISTRY[name].cls is C3
    assert "C3SE" not in list(REGISTRY)  # derived names are not listed as modules of their own


@pytest.mark.parametrize("name", KEEP)
def test_c3_with_each_block_inside(name):
    """At C3's width 32 (bottlenecks of 16 channels: the first backbone C3 of yolov5n), in train and eval mode."""
    m = C3Attention(32, 32, 2, block=name).train()
    x = torch.randn(1, 32, 6, 5, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(type(b.attention) is REGISTRY[name].cls for b in m.m)
    assert C3Attention(32, 32, 1, block=name).eval()(torch.randn(2, 32, 1, 1)).shape == (2, 32, 1, 1)


def test_c3_variant_has_more_parameters_exact_flops_and_takes_every_c3_tensor():
    base, model = quiet_model("yolov5n.yaml"), quiet_model("yolov5n_C3SE.yaml")
    c3 = [m for m in model.model if type(m).__name__ == "C3Attention"]
    assert [m.i for m in c3] == [2, 4, 6, 8] and all(type(b.attention).__name__ == "SE" for m in c3 for b in m.m)
    n_model, n_base = (sum(p.numel() for p in x.parameters()) for x in (model, base))
    assert n_model > n_base
    assert exact_flops(model, 64) > exact_flops(base, 64)
    csd, n, total, n_new = transfer_weights(base, model)
    assert n == len(base.state_dict())  # every C3 tensor found its place
    se_keys = [k for k in model.state_dict() if ".attention." in k]
    assert total == n + len(se_keys) and n_new == len(se_keys)


def test_c3_variant_on_p6_base_and_any_size():
    model = quiet_model("yolov5n6_C3CBAM.yaml")
    assert [m.i for m in model.model if type(m).__name__ == "C3Attention"] == [2, 4, 6, 8, 10]
    assert load_model_yaml("yolov5x_C3ECA.yaml")[0]["width_multiple"] == 1.25
    with pytest.raises(ModelConfigError, match="yolov3_C3SE.yaml: cannot put C3SE on yolov3.yaml"):
        load_model_yaml("yolov3_C3SE.yaml")


def test_c3_variant_summary_prints_exact_gflops():
    with captured_log() as lines:
        Model("yolov5n_C3SE.yaml")
    assert any("models.common.C3Attention" in ln for ln in lines)
    assert any(ln.startswith("Exact:") and "GFLOPs" in ln for ln in lines)
