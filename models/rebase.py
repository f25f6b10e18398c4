"""Attention variants on any base config (yolov5s6_SE.yaml): a zoo yaml's edits replayed by landmarks.

A variant yaml is the yolov5l layout plus edits (blocks inserted, modules swapped). The edits are recovered by
aligning it with `yolov5l.yaml`, described by landmarks that other bases share ("before the backbone's SPPF", "after
the backbone's first C3", "every 1x1 head Conv"), and replayed on the target base with its `from` indices renumbered.
"""

from dataclasses import dataclass
from difflib import SequenceMatcher

from models.registry import REGISTRY, Channels

VARIANT_LAYOUT = "yolov5l.yaml"  # the layout every models/yolov5_<Block>.yaml is written on


class VariantError(ValueError):
    """The variant's edits cannot be found or replayed on the requested base."""


@dataclass(frozen=True)
class Landmark:
    """A row found by section, module and its rank among that section's rows of the module."""

    section: str
    module: str
    rank: int  # from the start (>= 0) or from the end (< 0)

    def find(self, rows):
        hits = [i for i, (sec, row) in enumerate(rows) if sec == self.section and row[2] == self.module]
        if not hits or not -len(hits) <= self.rank < len(hits):
            return None
        return hits[self.rank]

    def __str__(self):
        if self.rank in (0, -1):
            return f"the {self.section}'s {('first', 'last')[self.rank]} {self.module}"
        end = "" if self.rank >= 0 else " from the end"
        return f"the {self.section}'s {self.module} #{abs(self.rank) + (self.rank >= 0)}{end}"


@dataclass(frozen=True)
class DetectInput:
    """The layer feeding one of Detect's inputs, ranked from the end (-1: the last, P5 in yolov5l)."""

    rank: int

    def find(self, rows):
        detect = [i for i, (_, r) in enumerate(rows) if REGISTRY[r[2]].channels is Channels.DETECT]
        fs = [x if x != -1 else detect[-1] - 1 for x in _refs(rows[detect[-1]][1])] if detect else []
        return fs[self.rank] if -len(fs) <= self.rank < len(fs) else None

    def __str__(self):
        return f"the layer feeding Detect's input #{self.rank} (from the end)"


def flat(d):
    """[(section, row)] of a model dict."""
    return [("backbone", r) for r in d["backbone"]] + [("head", r) for r in d["head"]]


def _key(sec, row):
    f, n, module, args = row
    return sec, f if f == -1 else "ref", n, module, repr(args)


def _landmark(rows, i, prefer_end):
    sec, row = rows[i]
    hits = [j for j, (s, r) in enumerate(rows) if s == sec and r[2] == row[2]]
    k = hits.index(i)
    return Landmark(sec, row[2], k - len(hits) if prefer_end or len(hits) == 1 else k)


def _insert_anchor(base, i):
    """Where rows inserted before base row i sit: before a unique next row, else after the previous one."""
    nxt = _landmark(base, i, prefer_end=True) if i < len(base) else None
    if nxt is not None and len([1 for s, r in base if s == nxt.section and r[2] == nxt.module]) == 1:
        return "before", nxt
    prev_hits = [j for j, (s, r) in enumerate(base) if s == base[i - 1][0] and r[2] == base[i - 1][1][2]]
    near_end = prev_hits.index(i - 1) >= len(prev_hits) / 2
    return "after", _landmark(base, i - 1, prefer_end=near_end)


def widths(rows, ch=3):
    """Unscaled output channels of each row (None for Detect), by the registry's channel rules."""
    out = []
    for _, (f, _, module, args) in rows:
        fs = [f] if isinstance(f, int) else f
        ins = [(out[x] if x >= 0 else out[len(out) + x]) if out else ch for x in fs]
        rule = REGISTRY[module].channels
        if rule in (Channels.CONV, Channels.REPEAT) or (rule is Channels.KEEP and args):
            out.append(args[0])
        elif rule is Channels.CONCAT:
            out.append(sum(ins))
        elif rule is Channels.SPACE_TO_DEPTH:
            out.append(ins[0] * (args[0] if args else 2) ** 2)
        elif rule is Channels.DEPTH_TO_SPACE:
            out.append(ins[0] // (args[0] if args else 2) ** 2)
        else:
            out.append(None if rule is Channels.DETECT else ins[0])
    return out


def _absolute(rows):
    """Rows with every `from` index absolute except -1 (the previous row)."""
    fixed = []
    for i, (sec, (f, n, m, a)) in enumerate(rows):
        fs = [x if x >= 0 or x == -1 else i + x for x in ([f] if isinstance(f, int) else f)]
        fixed.append((sec, [fs[0] if isinstance(f, int) else fs, n, m, a]))
    return fixed


@dataclass
class Insert:
    """Rows a variant inserts next to a landmark; `redirect`: rows that read the landmark side read them instead."""

    where: str
    landmark: Landmark
    rows: list
    keeps_width: list
    redirect: bool


def _refs(row):
    f = row[0]
    return [f] if isinstance(f, int) else f


def _insert(base, variant, wv, i1, j1, j2):
    rows = variant[j1:j2]
    if any(r[0] != -1 for _, r in rows):
        raise VariantError("its inserted layers must read the layer before them (from -1)")
    keeps = [bool(r[3]) and r[3][0] == wv[j - 1] for j, (_, r) in zip(range(j1, j2), rows)]
    readers = [r for _, r in variant[j2:] if j2 - 1 in _refs(r)]
    detect = [r for r in readers if REGISTRY[r[2]].channels is Channels.DETECT]
    if detect:  # a block on an output level: follow that level on the other base
        fs = _refs(detect[0])
        where, landmark = "after", DetectInput(fs.index(j2 - 1) - len(fs))
    else:
        where, landmark = _insert_anchor(base, i1)
    return Insert(where, landmark, rows, keeps, bool(readers))


def _swaps(base, variant, i1, i2, j1):
    swaps = {}
    for (sec, b), (_, v) in zip(base[i1:i2], variant[j1 : j1 + i2 - i1]):
        if (b[1], b[3]) != (v[1], v[3]):
            raise VariantError(f"it changes the arguments of layer {b[2]} {b[3]}, not only the module")
        swaps[(sec, b[2], repr(b[3][1:]))] = v[2]
    return swaps


def edits(layout, variant):
    """(inserts, swaps) that turn the layout dict into the variant dict."""
    base, var = _absolute(flat(layout)), _absolute(flat(variant))
    wv = widths(var)
    matcher = SequenceMatcher(None, [_key(*r) for r in base], [_key(*r) for r in var], autojunk=False)
    inserts, swaps = [], {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "insert":
            inserts.append(_insert(base, var, wv, i1, j1, j2))
        elif tag == "replace" and i2 - i1 == j2 - j1:
            swaps.update(_swaps(base, var, i1, i2, j1))
        elif tag != "equal":
            raise VariantError("it removes or reorders layers of the base layout")
    for sec, module, rest in swaps:  # a swap covers every matching row, so it means the same on another base
        if sum(1 for s, r in base if (s, r[2], repr(r[3][1:])) == (sec, module, rest)) != sum(
            1 for s, r in var if (s, r[2]) == (sec, swaps[(sec, module, rest)])
        ):
            raise VariantError(f"it swaps only some of the {sec}'s {module} {rest} layers")
    return inserts, swaps


def _apply_swaps(rows, swaps, base_name):
    for (sec, module, rest), new in swaps.items():
        hits = [r for s, r in rows if (s, r[2], repr(r[3][1:])) == (sec, module, rest)]
        if not hits:
            raise VariantError(
                f"{base_name} has no {module} layer with arguments [c2, {rest[1:-1]}] in its {sec} for {new} to replace"
            )
        for r in hits:
            r[2] = new


def _plan_inserts(rows, inserts, base_name):
    plan, w = {}, widths(rows)
    for ins in inserts:
        k = ins.landmark.find(rows)
        if k is None:
            raise VariantError(f"{base_name} lacks {ins.landmark}, which the block goes {ins.where}")
        p = k if ins.where == "before" else k + 1
        new = [
            (rows[k][0], [-1, r[1], r[2], [w[p - 1], *r[3][1:]] if keep else list(r[3])])
            for (_, r), keep in zip(ins.rows, ins.keeps_width)
        ]
        plan[p] = (new, ins.redirect)
    return plan


def variant_on_base(layout, variant, base, base_name="base"):
    """Model dict: `base` with the edits that turn `layout` into `variant`; VariantError when they do not fit."""
    inserts, swaps = edits(layout, variant)
    rows = [(s, [f, n, m, list(a)]) for s, (f, n, m, a) in _absolute(flat(base))]
    _apply_swaps(rows, swaps, base_name)
    plan = _plan_inserts(rows, inserts, base_name)
    out, index, redirect = [], {}, {}
    for k in range(len(rows) + 1):
        new, to_block = plan.get(k, ([], False))
        out.extend(new)
        if new and to_block:
            redirect[k - 1] = len(out) - 1
        if k < len(rows):
            index[k] = len(out)
            out.append(rows[k])
    for _, r in rows:
        fs = [x if x == -1 else redirect.get(x, index[x]) for x in _refs(r)]
        r[0] = fs[0] if isinstance(r[0], int) else fs
    d = dict(base)
    d["backbone"] = [r for s, r in out if s == "backbone"]
    d["head"] = [r for s, r in out if s == "head"]
    return d
