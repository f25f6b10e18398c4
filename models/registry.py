"""The registry of every module a model yaml may name; blocks register themselves where they are defined.

A class joins with `@register("SE", "SElayer", channels=Channels.KEEP)`: its yaml name, then aliases, then the rule
by which `parse_model` feeds it channels. This module knows no block; everything else (parse_model, the
`models.common` re-exports, tests, benchmarks, the README zoo table) reads `REGISTRY`.
"""

from dataclasses import dataclass
from enum import Enum


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

    @property
    def is_attention(self):
        """True for the zoo's blocks (defined under models/attention/)."""
        return self.cls.__module__.startswith("models.attention.")


class RegistryError(ValueError):
    """A name registered twice, or a registration without a channel rule."""


REGISTRY = {}  # yaml name or alias -> Entry


def add(cls, name, *aliases, channels):
    """Register `cls` under `name` and `aliases` with a `Channels` rule; a name taken already is an error.

    Classes of a module run as a script (`python models/yolo.py`) are left out: the package module registers them.
    """
    if cls.__module__ == "__main__":
        return cls
    if not isinstance(channels, Channels):
        raise RegistryError(f"register {name}: channels must be a Channels rule, got {channels!r}")
    entry = Entry(cls, channels, name, tuple(aliases))
    for n in (name, *aliases):
        if n in REGISTRY:
            taken = REGISTRY[n].cls
            raise RegistryError(f"'{n}' is already registered to {taken.__module__}.{taken.__qualname__}")
    for n in (name, *aliases):
        REGISTRY[n] = entry
    return cls


def register(name, *aliases, channels):
    """Class decorator: `@register("SE", "SElayer", channels=Channels.KEEP)` makes the class a yaml module."""

    def decorate(cls):
        return add(cls, name, *aliases, channels=channels)

    return decorate


def entries(attention=None):
    """Each registered module once (aliases folded), in registration order; `attention` filters the zoo."""
    unique = {e.name: e for e in REGISTRY.values()}
    return [e for e in unique.values() if attention is None or e.is_attention == attention]
