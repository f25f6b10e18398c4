"""The registry of every module a model yaml may name; blocks register themselves where they are defined.

A class joins with `@register("SE", "SElayer", channels=Channels.KEEP, placement=BEFORE_SPPF)`: its yaml name, then
aliases, the rule by which `parse_model` feeds it channels, its default place in a model (`models/placement.py`) and,
when its ops need more than export.py's default, the lowest ONNX opset. This module knows no block: the first read of
`REGISTRY` imports every module under `models/attention/` (and the v6.1 modules), so a new block file needs no import
line anywhere; everything else (parse_model, `build_block`, the `models.common` re-exports, tests, benchmarks, the
variant yamls and the README zoo table) reads `REGISTRY`.
"""

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Channels(Enum):
    """How a module takes channels from the yaml line `[from, n, module, args]`."""

    CONV = "conv"  # args [c2, *rest]: c2 scaled by width, built as (c1, c2, *rest); may change channels
    REPEAT = "repeat"  # like CONV, and the depth-scaled n goes in as the third argument (C3, BottleneckCSP)
    KEEP = "keep"  # channel-preserving attention: args [c2, *rest], scaled c2 must equal c1
    CONCAT = "concat"  # output channels = sum of the inputs; args as written
    DETECT = "detect"  # args [nc, anchors]: the input channel list is appended
    SAME = "same"  # output channels = input channels; args as written (nn.Upsample)
    NORM = "norm"  # args replaced by [c1] (nn.BatchNorm2d)
    SUM = "sum"  # element-wise merge of inputs with equal channels; args as written (Sum)
    SPACE_TO_DEPTH = "space_to_depth"  # args [gain]: output channels = c1 * gain^2 (Contract)
    DEPTH_TO_SPACE = "depth_to_space"  # args [gain]: output channels = c1 / gain^2 (Expand)


@dataclass(frozen=True)
class Entry:
    """A registered module: its class, channel rule, yaml name and aliases."""

    cls: type
    channels: Channels
    name: str
    aliases: tuple = ()
    placement: object = None  # a models.placement.Placement: where the block's variant yaml puts it
    opset: int = None  # the lowest ONNX opset its ops need, when above export.py's default
    kwargs: dict = field(default_factory=dict)  # bound constructor keywords (the block inside a C3 variant)

    def build(self, *args, **kwargs):
        """The module, built from constructor arguments (and the entry's bound keywords)."""
        return self.cls(*args, **{**self.kwargs, **kwargs})

    @property
    def is_attention(self):
        """True for the zoo's blocks (defined under models/attention/)."""
        return self.cls.__module__.startswith("models.attention.")


class RegistryError(ValueError):
    """A name registered twice, or a registration without a channel rule."""


LOCATIONS = ("models.common", "models.experimental", "models.yolo", "models.attention")  # imported on first read
C3_PREFIX = "C3"  # `C3SE`: a C3 whose bottlenecks each hold an SE block (models.common.C3Attention)


class Registry(Mapping):
    """yaml name or alias -> Entry; reading it imports the modules of LOCATIONS (packages: every module under them)."""

    def __init__(self, locations):
        self._entries, self._locations, self._state = {}, locations, "unloaded"

    def _load(self):
        if self._state != "unloaded":
            return  # loaded, or loading: a module read the registry while being imported
        self._state = "loading"
        for location in self._locations:
            module = importlib.import_module(location)
            if hasattr(module, "__path__"):
                for info in sorted(pkgutil.iter_modules([str(Path(p)) for p in module.__path__]), key=lambda i: i.name):
                    importlib.import_module(f"{location}.{info.name}")
        self._state = "loaded"

    def add(self, entry):
        for n in (entry.name, *entry.aliases):
            if n in self._entries:
                taken = self._entries[n].cls
                raise RegistryError(f"'{n}' is already registered to {taken.__module__}.{taken.__qualname__}")
        for n in (entry.name, *entry.aliases):
            self._entries[n] = entry

    def __getitem__(self, name):
        self._load()
        if name in self._entries:
            return self._entries[name]
        entry = self._c3_variant(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def _c3_variant(self, name):
        """`C3SE`: C3 with the channel-keeping block SE in every bottleneck; None when `name` is not such a name."""
        block = self._entries.get(name[len(C3_PREFIX) :]) if name.startswith(C3_PREFIX) else None
        host = self._entries.get("C3Attention")
        if block is None or host is None or block.channels is not Channels.KEEP or not block.is_attention:
            return None
        return Entry(host.cls, host.channels, name, kwargs={"block": block.name})

    def __iter__(self):
        self._load()
        return iter(self._entries)

    def __len__(self):
        self._load()
        return len(self._entries)


REGISTRY = Registry(LOCATIONS)


def add(cls, name, *aliases, channels, placement=None, opset=None):
    """Register `cls` under `name` and `aliases` with a `Channels` rule; a name taken already is an error.

    Classes of a module run as a script (`python models/yolo.py`) are left out: the package module registers them.
    """
    if cls.__module__ == "__main__":
        return cls
    if not isinstance(channels, Channels):
        raise RegistryError(f"register {name}: channels must be a Channels rule, got {channels!r}")
    REGISTRY.add(Entry(cls, channels, name, tuple(aliases), placement, opset))
    return cls


def register(name, *aliases, channels, placement=None, opset=None):
    """Class decorator: `@register("SE", "SElayer", channels=Channels.KEEP)` makes the class a yaml module."""

    def decorate(cls):
        return add(cls, name, *aliases, channels=channels, placement=placement, opset=opset)

    return decorate


def entries(attention=None):
    """Each registered module once (aliases folded), in registration order; `attention` filters the zoo."""
    unique = {e.name: e for e in REGISTRY.values()}
    return [e for e in unique.values() if attention is None or e.is_attention == attention]


def build_block(name, c1, c2=None, *args, **kwargs):
    """The one factory: block `name` (yaml name or alias) for c1 input channels; c2 defaults to c1.

    Further arguments follow the block's constructor (a conv replacement's k, s), keywords its options (reduction).
    """
    return REGISTRY[name].build(c1, c1 if c2 is None else c2, *args, **kwargs)


def required_opset(model):
    """(lowest ONNX opset the model's modules declare they need or 0, names of the modules that need it)."""
    by_class = {e.cls: e for e in entries() if e.opset}
    needs = [by_class[type(m)] for m in model.modules() if type(m) in by_class]
    top = max((e.opset for e in needs), default=0)
    return top, sorted({e.name for e in needs if e.opset == top})
