"""Model yaml loading: file lookup (models/, models/hub/), variants on any base (yolov5s6_SE.yaml), validation."""

import re
from pathlib import Path

import yaml

from models.errors import ModelConfigError
from models.rebase import VariantError, compose_variant

MODELS_DIR = Path(__file__).resolve().parent

# depth_multiple, width_multiple of the five YOLOv5 sizes
SCALES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def load_model_yaml(cfg):
    """Return (yaml dict, display name) for a dict, a yaml path, or a name found in models/."""
    if isinstance(cfg, dict):
        d = dict(cfg)
        name = d.get("yaml_file", "model dict")
    else:
        name = Path(cfg).name
        d = _load_named(cfg, name)
        d["yaml_file"] = name
    validate_model_dict(d, name)
    return d, name


def _load_named(cfg, name):
    try:
        path, scale = resolve_cfg(cfg)
    except FileNotFoundError:
        d = _variant_on_other_base(cfg, name)
        if d is None:
            raise
        return d
    d = _read_yaml(path, name)
    if scale:
        d["depth_multiple"], d["width_multiple"] = SCALES[scale]
    return d


def _variant_on_other_base(cfg, name):
    """'yolov5s6_SE.yaml', 'yolov5n_C3CBAM.yaml': the block's declared placement on the base; None if no such pair."""
    m = re.fullmatch(r"(.+)_([^_]+)(\.ya?ml)", name)
    base = m and _find(Path(cfg).with_name(m.group(1) + m.group(3)))
    if not base:
        return None
    try:
        return compose_variant(_read_yaml(base, base.name), base.name, m.group(2))
    except VariantError as e:
        raise ModelConfigError(f"{name}: cannot put {m.group(2)} on {base.name}: {e}") from None


def resolve_cfg(cfg):
    """Find a model yaml; 'yolov5s_SOCA.yaml' falls back to 'yolov5_SOCA.yaml' with the s multiples."""
    path = _find(Path(cfg))
    if path:
        return path, None
    m = re.fullmatch(r"(yolov5)([nsmlx])(_.+\.ya?ml)", Path(cfg).name)
    if m:
        base = _find(Path(cfg).with_name(m.group(1) + m.group(3)))
        if base:
            return base, m.group(2)
    raise FileNotFoundError(f"model yaml '{cfg}' not found (looked in the current folder, {MODELS_DIR} and its hub/)")


def _find(path):
    for p in (path, MODELS_DIR / path.name, MODELS_DIR / "hub" / path.name):
        if p.is_file():
            return p
    return None


def _read_yaml(path, name):
    try:
        with open(path, errors="ignore") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ModelConfigError(f"{name}: not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ModelConfigError(f"{name}: expected a mapping with {', '.join(REQUIRED_KEYS)}, got {type(d).__name__}")
    return d


def validate_model_dict(d, name):
    """Check the top-level keys, multiples, anchors and layer rows before anything is built."""
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ModelConfigError(f"{name}: missing required key(s) {', '.join(missing)}")
    if not isinstance(d["nc"], int) or isinstance(d["nc"], bool) or d["nc"] < 1:
        raise ModelConfigError(f"{name}: nc must be a positive int, got {d['nc']!r}")
    for k in ("depth_multiple", "width_multiple"):
        if not isinstance(d[k], (int, float)) or isinstance(d[k], bool) or d[k] <= 0:
            raise ModelConfigError(f"{name}: {k} must be a positive number, got {d[k]!r}")
    _validate_anchors(d["anchors"], name)
    for part in ("backbone", "head"):
        rows = d[part]
        if not isinstance(rows, list) or not rows:
            raise ModelConfigError(f"{name}: '{part}' must be a non-empty list of [from, number, module, args]")
    for i, row in enumerate(d["backbone"] + d["head"]):
        if not isinstance(row, list) or len(row) != 4:
            raise ModelConfigError(f"{name}: layer {i}: expected [from, number, module, args], got {row!r}")


def _validate_anchors(anchors, name):
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors > 0:
        return
    ok = isinstance(anchors, list) and anchors and all(isinstance(a, list) for a in anchors)
    ok = ok and all(a and len(a) % 2 == 0 and len(a) == len(anchors[0]) for a in anchors)
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for a in anchors for v in a)
    if not ok:
        raise ModelConfigError(
            f"{name}: malformed anchors {anchors!r}: expected one list per output level, each with the same "
            "even number of positive pixel sizes (w1,h1, w2,h2, ...), or an int count of anchors per level"
        )
