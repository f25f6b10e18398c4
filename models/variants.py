"""The attention variants as data: base config + block + position. The `models/yolov5_<name>.yaml` files are generated.

Usage:
    python -m models.variants           # check the yamls and the README zoo table; exit 1 if one is stale
    python -m models.variants --write   # (re)write them

A variant either inserts its block after a base layer (every reader of that layer then reads the block, so a block
after the last head C3 feeds Detect) or replaces the module of some base layers, keeping their arguments. `from`
indices and the `# i` layer comments are renumbered by code.
"""

import argparse
import re
import sys
from dataclasses import dataclass

import yaml

from models.config import MODELS_DIR
from models.registry import REGISTRY, entries

README = MODELS_DIR.parent / "README.md"
ROW = re.compile(  # one layer line of a v6.1 yaml: `  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0-P1/2`
    r"^(?P<indent>\s*\[?)\[(?P<f>-?\d+|\[[-\d, ]+\]), (?P<n>\d+), (?P<module>[\w.]+), (?P<args>\[.*\])\]"
    r"(?P<end>,?)(?P<comment>\s*#.*)?$"
)


@dataclass(frozen=True)
class Variant:
    """One zoo config: `block` inserted after base layer `after` (with `args`), or replacing base layers `replace`."""

    name: str
    block: str
    where: str
    after: int = None
    args: tuple = ()
    replace: tuple = ()
    base: str = "yolov5l.yaml"

    @property
    def file(self):
        return MODELS_DIR / f"yolov5_{self.name}.yaml"


END_OF_BACKBONE = "end of backbone, before SPPF"
VARIANTS = (
    Variant("SOCA", "SOCA", "after the last head C3 (P5), Detect reads it (seed 000)", after=23),
    Variant("SE", "SE", END_OF_BACKBONE + " (seed 002)", after=8),
    Variant("CBAM", "CBAM", END_OF_BACKBONE, after=8),
    Variant("DoubleAttention", "DoubleAttention", "after the P2 C3 (seed 001, adapted to v5)", after=2),
    Variant("SK", "SKAttention", END_OF_BACKBONE, after=8),
    Variant("scSE", "scSE", END_OF_BACKBONE, after=8),
    Variant("SGE", "SGE", END_OF_BACKBONE, after=8),
    Variant("SCConv", "SCConv", "a 3x3 conv layer at the " + END_OF_BACKBONE, after=8, args=(1024, 3, 1)),
    Variant("SplitAttn", "SplitAttn", "a 3x3 conv layer at the " + END_OF_BACKBONE, after=8, args=(1024, 3, 1)),
    Variant("dynamic", "DynamicConv", "replaces the two 1x1 head convs (seed 004)", replace=(10, 14)),
    Variant("ECA", "ECA", END_OF_BACKBONE, after=8),
    Variant("CoordAtt", "CoordAtt", END_OF_BACKBONE, after=8),
    Variant("SimAM", "SimAM", END_OF_BACKBONE, after=8),
)


def changed_layers(v):
    """[(index in the variant, block name)] of the layers the variant adds or replaces."""
    return [(v.after + 1, v.block)] if v.after is not None else [(i, v.block) for i in v.replace]


def _new_from(f, i, v):
    """Base row i's `from` in the variant: indices from `after` on shift by one (readers of `after` read the block)."""

    def one(j):
        if v.after is None or j == -1:
            return j
        j = j + i if j < 0 else j
        return j + 1 if j >= v.after else j

    return [one(j) for j in f] if isinstance(f, list) else one(f)


def _row_text(m, f, module, args, comment):
    f = f"[{', '.join(map(str, f))}]" if isinstance(f, list) else str(f)
    return f"{m['indent']}[{f}, {m['n']}, {module}, {args}]{m['end']}{comment}"


def _renumbered_comment(comment, new):
    """`# 13 (P3/8-small)` -> `# 14 (P3/8-small)`: a leading layer number follows the layer."""
    return re.sub(r"^(\s*#\s*)\d+", lambda c: f"{c.group(1)}{new}", comment or "")


def _header(v):
    cls = REGISTRY[v.block].cls
    return [
        f"# YOLOv5 v6.1 l layout with {v.block}: {v.where}",
        f"# {v.block}: {cls.__doc__.strip().splitlines()[0]}",
        f"# yolov5{{n,s,m,x}}_{v.name}.yaml picks the other sizes' multiples",
        f"# Generated from {v.base} by `python -m models.variants --write` (models/variants.py): edit that, not this",
    ]


def render(v):
    """The yaml text of variant v, from its base yaml's text."""
    lines = (MODELS_DIR / v.base).read_text().splitlines()
    out, i = _header(v), 0
    for line in lines[1:]:
        m = ROW.match(line)
        if not m:
            out.append(line)
            continue
        new = i + (v.after is not None and i > v.after)
        module = v.block if i in v.replace else m["module"]
        f = _new_from(_parse_from(m["f"]), i, v)
        out.append(_row_text(m, f, module, m["args"], _renumbered_comment(m["comment"], new)))
        if i == v.after:
            args = list(v.args) or [yaml.safe_load(m["args"])[0]]
            out.append(f"   [-1, 1, {v.block}, [{', '.join(map(str, args))}]],  # {new + 1} {v.block}")
        i += 1
    return "\n".join(out) + "\n"


def _parse_from(text):
    return [int(x) for x in text.strip("[]").split(",")] if text.startswith("[") else int(text)


def zoo_table():
    """The README zoo table: one row per variant, block names, aliases and paper from the registry."""
    rows = ["| yaml name (aliases) | paper | config | placement |", "| --- | --- | --- | --- |"]
    for v in VARIANTS:
        e = REGISTRY[v.block]
        names = f"`{e.name}`" + (f" ({', '.join(f'`{a}`' for a in e.aliases)})" if e.aliases else "")
        rows.append(f"| {names} | {e.cls.__doc__.strip().splitlines()[0]} | `{v.file.name}` | {v.where} |")
    return rows


def readme_with_table(text):
    """README text with the table of section 'The attention zoo' replaced by `zoo_table()`."""
    lines = text.splitlines()
    start = lines.index("## The attention zoo")
    first = next(k for k in range(start, len(lines)) if lines[k].startswith("| yaml name"))
    last = next(k for k in range(first, len(lines)) if not lines[k].startswith("|"))
    return "\n".join(lines[:first] + zoo_table() + lines[last:]) + "\n"


def stale():
    """Files whose text differs from what the variants generate, as {path: expected text}."""
    expected = {v.file: render(v) for v in VARIANTS}
    expected[README] = readme_with_table(README.read_text())
    return {p: t for p, t in expected.items() if not p.is_file() or p.read_text() != t}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the variant yamls and the README zoo table")
    parser.add_argument("--write", action="store_true", help="write the stale files instead of only listing them")
    opt = parser.parse_args(argv)
    missing = sorted({e.name for e in entries(attention=True)} - {v.block for v in VARIANTS})
    if missing:
        print(f"models/variants.py: no variant for registered block(s) {', '.join(missing)}")
        return 1
    for path, text in stale().items():
        if opt.write:
            path.write_text(text)
        print(f"{'wrote' if opt.write else 'stale'}: {path.relative_to(README.parent)}")
    return 0 if opt.write or not stale() else 1


if __name__ == "__main__":
    sys.exit(main())
