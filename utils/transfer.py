"""Transfer pretrained weights into a model variant by structure: inserted attention blocks shift no weight.

The layers of both models are aligned as sequences of (module class, tensor shapes), the structure their resolved
yaml arguments produce, so a block inserted at layer 9 moves every later `model.<i>` to `model.<i + 1>` and all of
them still find their weights. Tensors of inserted or replaced layers are reported as new.
"""

import difflib
from collections import defaultdict

from utils.general import LOGGER
from utils.torch_utils import de_parallel


def transfer_weights(src_model, dst_model, exclude=()):
    """(state_dict for dst_model, n transferred, n dst tensors, n new in inserted layers); skips exclude-word keys."""
    src, dst = _layers(src_model, "source"), _layers(dst_model, "destination")
    dst_sd = de_parallel(dst_model).state_dict()
    csd, paired = {}, set()
    for i, j in _align(src, dst):
        paired.add(j)
        for suffix, v in src[i][1].items():
            key = f"model.{j}.{suffix}"
            if key in dst_sd and v.shape == dst_sd[key].shape and not any(x in key for x in exclude):
                csd[key] = v.float() if v.is_floating_point() else v
    n_new = sum(len(tensors) for j, (_, tensors) in enumerate(dst) if j not in paired)
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


def _align(src, dst):
    """Pairs (i, j) of aligned layers: identical structure first, then same-class layers inside replaced stretches."""
    pairs = []
    for tag, i1, i2, j1, j2 in _opcodes([_signature(x) for x in src], [_signature(x) for x in dst]):
        if tag == "equal":
            pairs += zip(range(i1, i2), range(j1, j2))
        elif tag == "replace":  # e.g. Detect with another nc: same class, some shapes differ
            for _, a1, a2, b1, _ in _opcodes([x[0] for x in src[i1:i2]], [x[0] for x in dst[j1:j2]], "equal"):
                pairs += zip(range(i1 + a1, i1 + a2), range(j1 + b1, j1 + b1 + a2 - a1))
    return pairs


def _opcodes(a, b, only=None):
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return [op for op in ops if only is None or op[0] == only]
