"""parse_model: turn a validated model dict into nn.Sequential layers, driven by `models.registry`."""

import difflib
import inspect
from dataclasses import dataclass

import torch.nn as nn

from models.errors import ModelConfigError
from models.registry import REGISTRY
from utils.general import LOGGER, make_divisible

SYMBOLS = {"None": None, "True": True, "False": False}


@dataclass
class _Layer:
    """One yaml row being built, with what the error messages need."""

    i: int
    f: object
    n: int
    name: str
    args: list

    def error(self, source, problem):
        return ModelConfigError(f"{source}: layer {self.i} {self.name} {self.args}: {problem}")


def parse_model(d, ch, source="model.yaml"):
    """Build the layers of model dict `d` for input channels `ch` ([3]); return (nn.Sequential, save list)."""
    LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save = [], []
    for layer, entry, _, args, n in planned_layers(d, ch, source):
        m_ = _construct(entry, args, n, layer, source)
        _annotate(m_, layer, args, entry.cls)
        save.extend(x % layer.i for x in ([layer.f] if isinstance(layer.f, int) else layer.f) if x != -1)
        layers.append(m_)
    return nn.Sequential(*layers), sorted(save)


def planned_layers(d, ch, source="model.yaml"):
    """Yield (layer, registry entry, output channels, constructor args, repeats) per row, by the channel rules."""
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    ctx = {"nc": nc, "anchors": anchors, "gw": gw, "no": na * (nc + 5)}
    ch = list(ch)
    for i, row in enumerate(d["backbone"] + d["head"]):
        layer = _read_row(i, row, source)
        entry = _lookup(REGISTRY, layer, source)
        _check_from(layer, source)
        layer.n = max(round(layer.n * gd), 1) if layer.n > 1 else layer.n
        c2, args, n = _RULES[entry.channels.value](layer, ch, ctx, source)
        yield layer, entry, c2, args, n
        if i == 0:
            ch = []
        ch.append(c2)


def layer_widths(d, source="model.yaml"):
    """Unscaled output channels of each row of model dict d (None for Detect), as parse_model would build them."""
    unscaled = dict(d, depth_multiple=1.0, width_multiple=1.0)
    return [c2 for _, _, c2, _, _ in planned_layers(unscaled, [3], source)]


def _read_row(i, row, source):
    f, n, name, args = row
    if not isinstance(name, str):
        raise ModelConfigError(f"{source}: layer {i}: module must be a name, got {name!r}")
    layer = _Layer(i, f, n, name, args)
    if not isinstance(args, list):
        raise layer.error(source, f"args must be a list, got {args!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise layer.error(source, f"number must be an int >= 1, got {n!r}")
    layer.args = [SYMBOLS.get(a, a) if isinstance(a, str) else a for a in args]
    return layer


def _lookup(registry, layer, source):
    entry = registry.get(layer.name)
    if entry is None:
        close = difflib.get_close_matches(layer.name, registry, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known modules: {', '.join(sorted(registry))}"
        raise layer.error(source, f"unknown module '{layer.name}'{hint}")
    return entry


def _check_from(layer, source):
    fs = [layer.f] if isinstance(layer.f, int) else layer.f
    if not isinstance(fs, list) or not fs or not all(isinstance(x, int) and not isinstance(x, bool) for x in fs):
        raise layer.error(source, f"'from' must be an int or a list of ints, got {layer.f!r}")
    for x in fs:
        if (x < 0 and -x > max(layer.i, 1)) or x >= layer.i and x >= 0:
            raise layer.error(source, f"'from' index {x} out of range: layer {layer.i} reads layers 0..{layer.i - 1}")


def _single_input(layer, ch, source):
    if not isinstance(layer.f, int):
        raise layer.error(source, f"takes one input, got 'from' {layer.f}")
    return ch[layer.f]


def _scaled_c2(layer, ctx, source):
    if not layer.args or not isinstance(layer.args[0], int) or isinstance(layer.args[0], bool):
        raise layer.error(source, "first argument must be the output channels c2 (an int)")
    c2 = layer.args[0]
    return make_divisible(c2 * ctx["gw"], 8) if c2 != ctx["no"] else c2


def _conv_rule(layer, ch, ctx, source):
    c1, c2 = _single_input(layer, ch, source), _scaled_c2(layer, ctx, source)
    if layer.n > 1 and c1 != c2:
        raise layer.error(source, f"repeating it {layer.n} times needs c1 == c2, got {c1} -> {c2}")
    return c2, [c1, c2, *layer.args[1:]], layer.n


def _repeat_rule(layer, ch, ctx, source):
    c2, args, n = _conv_rule(_Layer(layer.i, layer.f, 1, layer.name, layer.args), ch, ctx, source)
    args.insert(2, layer.n)
    return c2, args, 1


def _keep_rule(layer, ch, ctx, source):
    c1 = _single_input(layer, ch, source)
    c2 = _scaled_c2(layer, ctx, source) if layer.args else c1
    if c2 != c1:
        raise layer.error(
            source,
            f"keeps channels, but its c2 {layer.args[0]} scales to {c2} while its input has {c1} channels "
            f"(write the unscaled input channels, {round(c1 / ctx['gw'])}, as its first argument)",
        )
    return c2, [c1, c2, *layer.args[1:]], layer.n


def _concat_rule(layer, ch, ctx, source):
    fs = [layer.f] if isinstance(layer.f, int) else layer.f
    return sum(ch[x] for x in fs), layer.args, layer.n


def _detect_rule(layer, ch, ctx, source):
    fs = [layer.f] if isinstance(layer.f, int) else layer.f
    args = [ctx.get(a, a) if isinstance(a, str) else a for a in layer.args]
    if len(args) < 2:
        raise layer.error(source, "expects [nc, anchors]")
    if isinstance(args[1], int):
        args[1] = [list(range(args[1] * 2))] * len(fs)
    if not isinstance(args[1], list) or len(args[1]) != len(fs):
        levels = len(args[1]) if isinstance(args[1], list) else 0
        raise layer.error(source, f"has {len(fs)} inputs but {levels} anchor levels")
    args.append([ch[x] for x in fs])
    return None, args, layer.n


def _same_rule(layer, ch, ctx, source):
    return _single_input(layer, ch, source), layer.args, layer.n


def _norm_rule(layer, ch, ctx, source):
    c1 = _single_input(layer, ch, source)
    return c1, [c1], layer.n


def _once(layer, source):
    if layer.n != 1:
        raise layer.error(source, f"cannot be repeated (number {layer.n}): its output differs from its input")


def _sum_rule(layer, ch, ctx, source):
    _once(layer, source)
    fs = [layer.f] if isinstance(layer.f, int) else layer.f
    widths = [ch[x] for x in fs]
    if len(set(widths)) > 1:
        raise layer.error(source, f"adds its inputs element-wise, but they have different channels {widths}")
    return widths[0], layer.args, layer.n


def _gain(layer, source):
    _once(layer, source)
    gain = layer.args[0] if layer.args else 2
    if not isinstance(gain, int) or isinstance(gain, bool) or gain < 1:
        raise layer.error(source, f"gain must be an int >= 1, got {gain!r}")
    return gain


def _space_to_depth_rule(layer, ch, ctx, source):
    c1 = _single_input(layer, ch, source)
    return c1 * _gain(layer, source) ** 2, layer.args, layer.n


def _depth_to_space_rule(layer, ch, ctx, source):
    c1, gain = _single_input(layer, ch, source), _gain(layer, source)
    if c1 % gain**2:
        raise layer.error(source, f"input channels {c1} are not divisible by gain^2 = {gain**2}")
    return c1 // gain**2, layer.args, layer.n


_RULES = {
    "conv": _conv_rule,
    "repeat": _repeat_rule,
    "keep": _keep_rule,
    "concat": _concat_rule,
    "detect": _detect_rule,
    "same": _same_rule,
    "norm": _norm_rule,
    "sum": _sum_rule,
    "space_to_depth": _space_to_depth_rule,
    "depth_to_space": _depth_to_space_rule,
}


def _construct(entry, args, n, layer, source):
    cls, kwargs = entry.cls, entry.kwargs
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError:
        expected = f"{cls.__name__}{inspect.signature(cls)}"
        raise layer.error(source, f"wrong number of arguments {args} for {expected}") from None
    except ValueError:
        pass  # builtins without a Python signature: let the constructor decide
    try:
        return nn.Sequential(*(entry.build(*args) for _ in range(n))) if n > 1 else entry.build(*args)
    except (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError) as e:
        raise layer.error(source, f"{cls.__name__}{tuple(args)} cannot be built: {e}") from e


def _annotate(m_, layer, args, cls):
    t = f"{cls.__module__}.{cls.__qualname__}"
    np_ = sum(x.numel() for x in m_.parameters())
    m_.i, m_.f, m_.type, m_.np = layer.i, layer.f, t, np_
    LOGGER.info(f"{layer.i:>3}{str(layer.f):>18}{layer.n:>3}{np_:10.0f}  {t:<40}{str(args):<30}")
