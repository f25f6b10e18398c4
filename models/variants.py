"""The committed `models/yolov5_<Block>.yaml` files and the README zoo table, generated from the registry.

Usage:
    python -m models.variants           # check the yamls and the README zoo table; exit 1 if one is stale
    python -m models.variants --write   # (re)write them

Each zoo block declares its placement in its `@register` line; `models/rebase.py` puts it on `yolov5l.yaml`, and this
module writes the result as yaml text that keeps the base file's comments, with `from` indices and the `# i` layer
comments renumbered. The zoo table's name, paper and placement columns come from the registry; its last two columns,
the parameters and exact GFLOPs (at 640) each block's placement adds to yolov5s, cost one quiet model build per block
(about a second each), so the fast test checks the registry columns and a slow test the whole table.
"""

import argparse
import logging
import math
import re
import sys
from copy import deepcopy
from unittest import mock

import torch
import yaml

from models.config import MODELS_DIR
from models.rebase import VARIANT_LAYOUT, flat, place
from models.registry import entries
from models.yolo import Model
from utils.general import LOGGER
from utils.torch_utils import exact_flops

README = MODELS_DIR.parent / "README.md"
ZOO_SECTION = "## The attention zoo"
COST_BASE, COST_IMG = "yolov5s.yaml", 640  # the zoo table's params and GFLOPs are what a block adds to this model
HEADER = "| yaml name (aliases) | paper | placement | params added to yolov5s | GFLOPs added to yolov5s at 640 |"
_PROBE = Model._probe
ROW = re.compile(  # one layer line of a v6.1 yaml: `  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0-P1/2`
    r"^(?P<indent>\s*\[?)\[(?P<f>-?\d+|\[[-\d, ]+\]), (?P<n>\d+), (?P<module>[\w.]+), (?P<args>\[.*\])\]"
    r"(?P<end>,?)(?P<comment>\s*#.*)?$"
)


def variant_entries():
    """The zoo blocks that have a default placement, in registration order."""
    return [e for e in entries(attention=True) if e.placement is not None]


def variant_file(entry):
    return MODELS_DIR / f"yolov5_{entry.name}.yaml"


def _layout():
    return yaml.safe_load((MODELS_DIR / VARIANT_LAYOUT).read_text())


def _header(entry):
    return [
        f"# YOLOv5 v6.1 l layout with {entry.name}: {entry.placement.text}",
        f"# {entry.name}: {entry.cls.__doc__.strip().splitlines()[0]}",
        f"# yolov5{{n,s,m,x}}_{entry.name}.yaml picks the other sizes' multiples",
        f"# Generated from {VARIANT_LAYOUT} by `python -m models.variants --write`: edit its @register placement",
    ]


def _format_from(f):
    return f"[{', '.join(map(str, f))}]" if isinstance(f, list) else str(f)


def _format_args(args):
    return "[" + ", ".join(a if isinstance(a, str) and a in ("nc", "anchors") else _arg(a) for a in args) + "]"


def _arg(a):
    if a is None:
        return "None"
    return f"'{a}'" if isinstance(a, str) else str(a)


def render(entry):
    """The yaml text of a block's variant: the layout file's lines with the placed rows."""
    lines = (MODELS_DIR / VARIANT_LAYOUT).read_text().splitlines()
    rows = place(_layout(), entry.name, entry.placement, VARIANT_LAYOUT)
    row_lines = [k for k, line in enumerate(lines) if ROW.match(line)]
    if len(row_lines) != len(flat(_layout())):
        raise ValueError(f"{VARIANT_LAYOUT}: a layer row the ROW pattern does not read")
    lead = [lines[(row_lines[i - 1] + 1 if i else 1) : row_lines[i]] for i in range(len(row_lines))]
    out = _header(entry)
    for new, placed in enumerate(rows):
        if placed.origin is None:
            f, n, module, args = placed.row
            out.append(f"   [{_format_from(f)}, {n}, {module}, {_format_args(args)}],  # {new} {module}")
            continue
        out.extend(lead[placed.origin])
        m = ROW.match(lines[row_lines[placed.origin]])
        comment = re.sub(r"^(\s*#\s*)\d+", rf"\g<1>{new}", m["comment"] or "")
        row = f"[{_format_from(placed.row[0])}, {m['n']}, {placed.row[2]}, {m['args']}]"
        out.append(f"{m['indent']}{row}{m['end']}{comment}")
    out.extend(lines[row_lines[-1] + 1 :])
    return "\n".join(out) + "\n"


def zoo_cells(entry):
    """The registry's columns of a block's zoo row: yaml name (aliases), paper, placement."""
    names = f"`{entry.name}`" + (f" ({', '.join(f'`{a}`' for a in entry.aliases)})" if entry.aliases else "")
    return [names, entry.cls.__doc__.strip().splitlines()[0], entry.placement.text]


def _probe_on_meta(model, x):
    """Model._probe on a meta copy: the build-time stride probe costs shapes only, no arithmetic."""
    memo = {id(t): torch.empty_like(t, device="meta") for t in (*model.parameters(), *model.buffers())}
    return _PROBE(deepcopy(model, memo), x.to("meta"))


def model_cost(cfg):
    """(parameters, exact FLOPs at COST_IMG) of a model config, built quietly."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        with mock.patch.object(Model, "info"), mock.patch.object(Model, "_probe", _probe_on_meta):
            model = Model(cfg)
    finally:
        LOGGER.setLevel(level)
    return sum(p.numel() for p in model.parameters()), exact_flops(model, COST_IMG)


def block_costs(names):
    """{block: (parameters, FLOPs) its placement adds to COST_BASE} for the named blocks, one model build each."""
    params, flops = model_cost(COST_BASE)
    out = {}
    for name in names:
        p, f = model_cost(COST_BASE.replace(".yaml", f"_{name}.yaml"))
        out[name] = (p - params, f - flops)
    return out


def cost_cells(costs):
    """{block: [params cell, GFLOPs cell]} from {block: (parameters, FLOPs)}."""
    return {n: [f"{p:+,}" if p else "0", _gflops(f)] for n, (p, f) in costs.items()}


def known_cost_cells(text):
    """{block: its README row's cost cells} for the rows whose name, paper and placement still match the registry."""
    current = {e.name: zoo_cells(e) for e in variant_entries()}
    rows = readme_zoo_rows(text) if ZOO_SECTION in text.splitlines() else []
    return {name: r[3:] for r in rows for name, cells in current.items() if r[:3] == cells and len(r) == 5}


def _gflops(flops):
    """FLOPs as GFLOPs to 3 significant digits, signed, without exponent notation; 0 when none."""
    if flops == 0:
        return "0"
    g = flops / 1e9
    return f"{g:+.{max(0, 2 - math.floor(math.log10(abs(g))))}f}"


def zoo_table(cells):
    """The README zoo table: one row per block with a placement; names, paper and placement from the registry,
    then `cells[name]`: the parameters and exact GFLOPs the block adds to yolov5s at 640."""
    rows = [HEADER, "| --- | --- | --- | --- | --- |"]
    for e in variant_entries():
        rows.append("| " + " | ".join([*zoo_cells(e), *cells[e.name]]) + " |")
    return rows


def _table_span(lines):
    """(first, end) line indices of the table in section 'The attention zoo'."""
    start = lines.index(ZOO_SECTION)
    first = next(k for k in range(start, len(lines)) if lines[k].startswith("| yaml name"))
    end = next((k for k in range(first, len(lines)) if not lines[k].startswith("|")), len(lines))
    return first, end


def readme_zoo_rows(text):
    """The cells of each block row of the README zoo table (header and rule left out)."""
    lines = text.splitlines()
    first, end = _table_span(lines)
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[first + 2 : end]]


def readme_with_table(text, refresh=False):
    """README text with the zoo table regenerated; rows that still match the registry keep their measured costs
    unless `refresh` (only new or changed blocks are built, so adding a block costs one model build)."""
    cells = {} if refresh else known_cost_cells(text)
    missing = [e.name for e in variant_entries() if e.name not in cells]
    cells.update(cost_cells(block_costs(missing)) if missing else {})
    lines = text.splitlines()
    first, end = _table_span(lines)
    return "\n".join(lines[:first] + zoo_table(cells) + lines[end:]) + "\n"


def stale(refresh=False):
    """Files whose text differs from what the registry generates, as {path: expected text}."""
    expected = {variant_file(e): render(e) for e in variant_entries()}
    expected[README] = readme_with_table(README.read_text(), refresh)
    return {p: t for p, t in expected.items() if not p.is_file() or p.read_text() != t}


def orphans():
    """Committed variant yamls whose block is no longer registered with a placement."""
    known = {variant_file(e) for e in variant_entries()}
    return sorted(p for p in MODELS_DIR.glob("yolov5_*.yaml") if p not in known)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the variant yamls and the README zoo table")
    parser.add_argument("--write", action="store_true", help="write the stale files instead of only listing them")
    parser.add_argument("--refresh", action="store_true", help="re-measure every zoo row's costs, not only new ones")
    opt = parser.parse_args(argv)
    missing = sorted(e.name for e in entries(attention=True) if e.placement is None)
    if missing:
        print(f"models/variants.py: no placement= in the @register line of {', '.join(missing)}")
        return 1
    changed, removed = stale(opt.refresh), orphans()
    for path, text in changed.items():
        if opt.write:
            path.write_text(text)
        print(f"{'wrote' if opt.write else 'stale'}: {path.relative_to(README.parent)}")
    for path in removed:
        if opt.write:
            path.unlink()
        print(f"{'removed' if opt.write else 'orphan'}: {path.relative_to(README.parent)}")
    return 0 if opt.write or not (changed or removed) else 1


if __name__ == "__main__":
    sys.exit(main())
