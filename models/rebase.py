"""The one placement engine: a block's declared placement (models/placement.py) replayed on any base config.

`place(base, block, placement)` finds the placement's landmarks in the base (by section, module and rank, or by what
Detect reads), inserts or swaps rows, and renumbers every `from` index; the committed `models/yolov5_<Block>.yaml`
files (models/variants.py), `yolov5s6_SE.yaml` and `yolov5n_C3SE.yaml` all come from it.
"""

from dataclasses import dataclass

from models.errors import ModelConfigError
from models.parse import layer_widths
from models.placement import INSIDE_BACKBONE_C3, DetectInput
from models.registry import C3_PREFIX, REGISTRY, Channels

VARIANT_LAYOUT = "yolov5l.yaml"  # the layout every committed models/yolov5_<Block>.yaml is written on


class VariantError(ValueError):
    """The block's placement cannot be found on the requested base."""


@dataclass
class PlacedRow:
    """A row of the placed model: its section, [from, n, module, args], and the base row it came from (None: new)."""

    section: str
    row: list
    origin: int = None


def flat(d):
    """[(section, row)] of a model dict."""
    return [("backbone", r) for r in d["backbone"]] + [("head", r) for r in d["head"]]


def _refs(row):
    return [row[0]] if isinstance(row[0], int) else row[0]


def _absolute(rows):
    """Rows copied with every `from` index absolute except -1 (the previous row)."""
    out = []
    for i, (sec, (f, n, m, a)) in enumerate(rows):
        fs = [x if x >= 0 or x == -1 else i + x for x in ([f] if isinstance(f, int) else f)]
        out.append((sec, [fs[0] if isinstance(f, int) else fs, n, m, list(a)]))
    return out


def find(landmark, rows):
    """Index of the landmark's row in [(section, row)], or None."""
    if isinstance(landmark, DetectInput):
        detect = [i for i, (_, r) in enumerate(rows) if REGISTRY[r[2]].channels is Channels.DETECT]
        fs = [x if x != -1 else detect[-1] - 1 for x in _refs(rows[detect[-1]][1])] if detect else []
        return fs[landmark.rank] if -len(fs) <= landmark.rank < len(fs) else None
    hits = [i for i, (sec, row) in enumerate(rows) if sec == landmark.section and row[2] == landmark.module]
    return hits[landmark.rank] if hits and -len(hits) <= landmark.rank < len(hits) else None


def _widths(base, base_name):
    try:
        return layer_widths(base, base_name)
    except ModelConfigError as e:
        raise VariantError(str(e)) from None


def _insert_plan(base, rows, block, placement, base_name):
    """{position before which rows go: [PlacedRow]} for an 'insert' placement; args [width there, *placement.args]."""
    plan, widths = {}, _widths(base, base_name)
    for landmark in placement.landmarks:
        k = find(landmark, rows)
        if k is None:
            where = "before" if placement.before else "after"
            raise VariantError(f"{base_name} lacks {landmark}, which {block} goes {where}")
        p = k if placement.before else k + 1
        plan.setdefault(p, []).append(PlacedRow(rows[k][0], [-1, 1, block, [widths[p - 1], *placement.args]]))
    return plan


def _swap(rows, block, placement, base_name):
    """Swap the module of every matching row (placement.match, or each backbone C3 for 'inside_c3')."""
    if placement.kind == "inside_c3":
        section, module, rest, block = "backbone", "C3", None, C3_PREFIX + block
    else:
        section, module, rest = placement.match
    hits = [r for s, r in rows if s == section and r[2] == module and (rest is None or tuple(r[3][1:]) == rest)]
    if not hits:
        args = "" if rest is None else f" with arguments [c2, {', '.join(map(str, rest))}]"
        raise VariantError(f"{base_name} has no {module} layer{args} in its {section} for {block} to replace")
    for r in hits:
        r[2] = block


def place(base, block, placement, base_name="base"):
    """[PlacedRow] of model dict `base` with `block` at `placement`, `from` indices renumbered."""
    rows = _absolute(flat(base))
    plan = {}
    if placement.kind == "insert":
        plan = _insert_plan(base, rows, block, placement, base_name)
    else:
        _swap(rows, block, placement, base_name)
    out, index, redirect = [], {}, {}
    for k in range(len(rows) + 1):
        new = plan.get(k, [])
        out.extend(new)
        if new:
            redirect[k - 1] = len(out) - 1  # readers of the row before an inserted block read the block
        if k < len(rows):
            index[k] = len(out)
            out.append(PlacedRow(rows[k][0], rows[k][1], k))
    for placed in out:
        if placed.origin is not None:
            fs = [x if x == -1 else redirect.get(x, index[x]) for x in _refs(placed.row)]
            placed.row[0] = fs[0] if isinstance(placed.row[0], int) else fs
    return out


def placed_dict(base, block, placement, base_name="base"):
    """Model dict: `base` with `block` at `placement`."""
    rows = place(base, block, placement, base_name)
    d = dict(base)
    d["backbone"] = [p.row for p in rows if p.section == "backbone"]
    d["head"] = [p.row for p in rows if p.section == "head"]
    return d


def block_placement(name):
    """(block name, Placement) for a yaml name: `SE` -> its declared placement, `C3SE` -> SE inside each C3."""
    entry = REGISTRY.get(name)
    if entry is None:
        return None
    if entry.kwargs.get("block"):
        return entry.kwargs["block"], INSIDE_BACKBONE_C3
    return (entry.name, entry.placement) if entry.placement is not None else None


def compose_variant(base, base_name, block_name):
    """Model dict of `<base>_<block_name>.yaml` (yolov5s6_SE.yaml, yolov5n_C3CBAM.yaml); None if not a block name."""
    found = block_placement(block_name)
    if found is None:
        return None
    return placed_dict(base, *found, base_name)
