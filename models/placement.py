"""Where a block goes in a model, as data: a block's default placement is declared once, in its `@register` line.

The vocabulary is landmarks that every YOLOv5 base shares ("before the backbone's last SPPF", "the layers Detect
reads", "every head 1x1 Conv", "inside each backbone C3 bottleneck"); `models/rebase.py` replays a placement on any
base config, so `yolov5_SE.yaml`, `yolov5s6_SE.yaml` and `yolov5n_C3SE.yaml` all come from one engine.
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Landmark:
    """A row of a model config: by section and module, `rank` among that section's rows of the module (-1: last)."""

    section: str
    module: str
    rank: int

    def __str__(self):
        if self.rank in (0, -1):
            return f"the {self.section}'s {('first', 'last')[self.rank]} {self.module}"
        end = "" if self.rank >= 0 else " from the end"
        return f"the {self.section}'s {self.module} #{abs(self.rank) + (self.rank >= 0)}{end}"


@dataclass(frozen=True)
class DetectInput:
    """The layer feeding one of Detect's inputs, ranked from the end (-1: the last, P5 on a P5 base)."""

    rank: int

    def __str__(self):
        return f"the layer feeding Detect's input #{self.rank} (from the end)"


@dataclass(frozen=True)
class Placement:
    """What a block does to a base config.

    kind 'insert': a new row after each landmark (`before` True: before it), read by every reader of the row it
    follows; its args are [the width there, *args]. kind 'replace': the module of every row matching `match`
    (section, module, args after c2) becomes the block, arguments kept. kind 'inside_c3': the block in every
    bottleneck of the section's C3 modules, before the residual add (the `yolov5s_C3SE.yaml` naming).
    """

    text: str
    kind: str = "insert"
    landmarks: tuple = ()
    before: bool = False
    args: tuple = ()
    match: tuple = ()

    def with_args(self, *args):
        """The same place, with constructor arguments after c2 (a conv replacement's k, s)."""
        return replace(self, args=args)


BEFORE_SPPF = Placement("end of backbone, before SPPF", landmarks=(Landmark("backbone", "SPPF", -1),), before=True)
P5_OUTPUT = Placement("after the last head C3 (P5), Detect reads it", landmarks=(DetectInput(-1),))
DETECT_INPUTS = Placement(
    "after each head C3 Detect reads (P3, P4, P5)", landmarks=(DetectInput(-3), DetectInput(-2), DetectInput(-1))
)
AFTER_FIRST_C3 = Placement("after the backbone's first C3 (P2)", landmarks=(Landmark("backbone", "C3", 0),))
AFTER_LAST_TWO_C3 = Placement(
    "after the backbone's last two C3 (P4, P5)",
    landmarks=(Landmark("backbone", "C3", -2), Landmark("backbone", "C3", -1)),
)
HEAD_1X1_CONVS = Placement("replaces every head 1x1 Conv", kind="replace", match=("head", "Conv", (1, 1)))
INSIDE_BACKBONE_C3 = Placement("inside each backbone C3 bottleneck, before the residual add", kind="inside_c3")
