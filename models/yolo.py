"""YOLOv5 v6.1 model: the Detect head, the yaml-driven Model and parse_model.

Usage: python models/yolo.py --cfg yolov5s.yaml [--img 640] [--verbose]
"""

import argparse
import math
import sys
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from models.common import Conv
from models.config import ModelConfigError, load_model_yaml
from models.parse import parse_model
from models.registry import Channels, register
from models.tta import forward_augment
from utils.autoanchor import check_anchor_order
from utils.general import LOGGER
from utils.torch_utils import fuse_conv_and_bn, initialize_weights, model_info, profile_layers, select_device

__all__ = ["Detect", "Model", "parse_model", "ModelConfigError"]


@register("Detect", channels=Channels.DETECT)
class Detect(nn.Module):
    """YOLOv5 detection head: per-level 1x1 convs and the v6.x box decode (Jocher et al., YOLOv5)."""

    stride = None  # set by Model from a probe forward pass
    onnx_dynamic = False  # rebuild grids every call (ONNX export with dynamic shapes)

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        self.anchor_grid = [torch.zeros(1)] * self.nl
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x):
        if torch.is_autocast_enabled("cpu"):  # --half on CPU: bf16 trunk, float32 head and box decoding
            with torch.autocast("cpu", enabled=False):
                return self.forward([t.float() for t in x])
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if self.onnx_dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i, x[i].dtype)
                z.append(self._decode(x[i].sigmoid(), i).view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _decode(self, y, i):
        """xy = (2 sig - 0.5 + grid) * stride, wh = (2 sig)^2 * anchor, in input pixels."""
        if self.inplace:
            y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + self.grid[i]) * self.stride[i]
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
            return y
        xy = (y[..., 0:2] * 2 - 0.5 + self.grid[i]) * self.stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, y[..., 4:]), -1)

    def _make_grid(self, nx, ny, i, dtype):
        d = self.anchors.device
        yv, xv = torch.meshgrid(torch.arange(ny, device=d), torch.arange(nx, device=d), indexing="ij")
        shape = (1, self.na, ny, nx, 2)
        grid = torch.stack((xv, yv), 2).expand(shape).to(dtype)
        anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(shape).to(dtype)
        return grid, anchor_grid


class Model(nn.Module):
    """A YOLOv5 model built from a yaml file or dict."""

    def __init__(self, cfg="yolov5s.yaml", ch=3, nc=None, anchors=None):
        super().__init__()
        self.yaml, self.yaml_file = load_model_yaml(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            LOGGER.info(f"Overriding model.yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = round(anchors)
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch], source=self.yaml_file)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)
        self._build_strides(ch)
        initialize_weights(self)
        self.info()
        LOGGER.info("")

    def _build_strides(self, ch):
        """Run a 256x256 probe to learn each output level's stride; anchors go to grid units."""
        m = self.model[-1]
        if not isinstance(m, Detect):
            return
        s = 256
        m.inplace = self.inplace
        outputs = self._probe(torch.zeros(1, ch, s, s))
        m.stride = torch.tensor([s / x.shape[-2] for x in outputs])
        check_anchor_order(m)  # in pixels, before the anchors move to grid units
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize_biases()

    def _probe(self, x):
        """Forward x at build time; a layer that fails makes a ModelConfigError naming it and its input shapes."""
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda m, args: inputs.update(layer=m, x=args[0])) for m in self.model]
        try:
            return self.forward(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            m = inputs["layer"]
            raise ModelConfigError(
                f"{self.yaml_file}: layer {m.i} {m.type.split('.')[-1]} failed on input {_shapes(inputs['x'])}: {e}"
            ) from e
        finally:
            for h in hooks:
                h.remove()

    def forward(self, x, augment=False):
        if augment:
            return forward_augment(self, x)
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self, cf=None):
        """Objectness prior of 8 objects per 640 image, class prior 0.6/nc (Lin et al., Focal Loss, 2017)."""
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:] += math.log(0.6 / (m.nc - 0.99)) if cf is None else torch.log(cf / cf.sum())
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)

    def epoch_update(self, epoch, epochs):
        """Call `epoch_update(epoch, epochs)` on every block that has one; return their merged log values."""
        logs = {}
        for name, m in self.named_modules():
            if m is not self and hasattr(m, "epoch_update"):
                for k, v in (m.epoch_update(epoch, epochs) or {}).items():
                    logs[f"{name}.{k}"] = v
        return logs

    def fuse(self):
        """Fold BatchNorm into the preceding conv of every Conv/DWConv; other blocks are left as they are."""
        LOGGER.info("Fusing layers... ")
        for m in self.model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        self.info()
        return self

    def info(self, verbose=False, img_size=640):
        model_info(self, verbose, img_size)

    def _apply(self, fn):
        """Apply to(), cpu(), cuda(), half() also to Detect's non-buffer tensors."""
        self = super()._apply(fn)
        m = self.model[-1]
        if isinstance(m, Detect) and m.stride is not None:
            m.stride = fn(m.stride)
            m.grid = list(map(fn, m.grid))
            m.anchor_grid = list(map(fn, m.anchor_grid))
        return self


def _shapes(x):
    return [tuple(t.shape) for t in x] if isinstance(x, (list, tuple)) else tuple(x.shape)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build a model yaml and print its summary")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model.yaml")
    parser.add_argument("--img", "--img-size", type=int, default=640, help="input size for the exact GFLOPs")
    parser.add_argument("--verbose", action="store_true", help="print every parameter")
    parser.add_argument("--profile", action="store_true", help="profile model speed, per layer")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    opt = parser.parse_args(argv)
    try:
        model = Model(opt.cfg)
    except (ModelConfigError, FileNotFoundError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    if opt.verbose or opt.img != 640:
        model.info(verbose=opt.verbose, img_size=opt.img)
    if opt.profile:
        device = select_device(opt.device)
        profile_layers(
            model.to(device).eval(), torch.rand(8 if device.type == "cuda" else 1, 3, 640, 640, device=device)
        )
    return 0


if __name__ == "__main__":
    from models.yolo import main as _main  # run from the package module so isinstance(m, Detect) holds

    sys.exit(_main())
