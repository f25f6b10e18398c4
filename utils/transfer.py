"""Transfer pretrained weights into a model variant by structure: inserted attention blocks shift no weight.

The layers of both models are aligned as sequences of (module class, tensor shapes), the structure their resolved
yaml arguments produce, so a block inserted at layer 9 moves every later `model.<i>` to `model.<i + 1>` and all of
them still find their weights. Tensors of inserted or replaced layers are reported as new, except what a replacing
block takes from the layer it replaces through its `state_from(layer, tensors)` (DynamicConv from Conv).
"""

import difflib
from collections import defaultdict

from utils.general import LOGGER
from utils.torch_utils import de_parallel


def transfer_weights(src_model, dst_model, exclude=()):
    """(state_dict for dst_model, n transferred, n dst tensors, n new in inserted layers); skips exclude-word keys."""
    src, dst = _layers(src_model, "source"), _layers(dst_model, "destination")
    modules = de_parallel(dst_model).model
    dst_sd = de_parallel(dst_model).state_dict()
    adaptable = {j for j, m in enumerate(modules) if hasattr(m, "state_from")}
    source_of = {j: i for i, j in _align(src, dst, adaptable)}
    csd, n_new = {}, 0
    for j, (name, tensors) in enumerate(dst):
        if j not in source_of:
            n_new += len(tensors)
            continue
        src_name, src_tensors = src[source_of[j]]
        if src_name != name:  # a replaced layer that takes its predecessor's weights (DynamicConv from Conv)
            src_tensors = modules[j].state_from(src_name, src_tensors)
            n_new += len(tensors) - len(src_tensors)
        for suffix, v in src_tensors.items():
            key = f"model.{j}.{suffix}"
            if key in dst_sd and v.shape == dst_sd[key].shape and not any(x in key for x in exclude):
                csd[key] = v.float() if v.is_floating_point() else v
    return csd, len(csd), len(dst_sd), n_new


def log_transfer(n_transferred, n_total, n_new, weights):
    """Print the transfer summary line train.py shows for --weights."""
    LOGGER.info(f"Transferred {n_transferred}/{n_total} items ({n_new} new) from {weights}")


def _layers(model, role):
    """Per yaml layer: (class name, {key suffix: tensor}) from the model's state_dict."""
    model = de_parallel(model)
    layers = getattr(model, "model", None)
    if not hasattr(model, "yaml") or layers is None or not hasattr(layers, "__len__"):
        raise TypeError(
            f"transfer_weights: the {role} must be a models.yolo.Model built from a yaml, got {type(model).__name__}"
        )
    tensors = defaultdict(dict)
    for key, v in model.state_dict().items():
        _, i, suffix = key.split(".", 2)
        tensors[int(i)][suffix] = v
    return [(type(m).__name__, tensors[i]) for i, m in enumerate(layers)]


def _signature(layer):
    name, tensors = layer
    return name, tuple((k, tuple(v.shape)) for k, v in tensors.items())


def _align(src, dst, adaptable=()):
    """Pairs (i, j) of aligned layers: identical structure first, then, inside replaced stretches, same-class layers
    and layers of another class at the same place whose destination can adapt their weights (`adaptable` j)."""
    pairs = []
    for tag, i1, i2, j1, j2 in _opcodes([_signature(x) for x in src], [_signature(x) for x in dst]):
        if tag == "equal":
            pairs += zip(range(i1, i2), range(j1, j2))
        elif tag == "replace":  # e.g. Detect with another nc: same class, some shapes differ
            for op, a1, a2, b1, b2 in _opcodes([x[0] for x in src[i1:i2]], [x[0] for x in dst[j1:j2]]):
                same = op == "equal"
                if same or (op == "replace" and a2 - a1 == b2 - b1):
                    pairs += [
                        (i1 + a, j1 + b) for a, b in zip(range(a1, a2), range(b1, b2)) if same or j1 + b in adaptable
                    ]
    return pairs


def _opcodes(a, b):
    return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
