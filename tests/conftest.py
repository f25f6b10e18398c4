"""Shared pytest fixtures: the test data (tests/data, a copy of what the tests need from ../shared) and a
deterministic, single-threaded torch."""

import functools
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "data"  # mirrors the layout of ../shared; tests/data/README.md says where each file came from
REFERENCE = SHARED / "reference"
WEIGHTS = REFERENCE / "raccoon_yolov5n_best.pt"
RACCOON_VAL = SHARED / "data" / "raccoon" / "images" / "val"  # read only: nothing may write under tests/data
V61_RESULTS_HEADER = (  # results.csv columns as v6.1 writes them
    "epoch train/box_loss train/obj_loss train/cls_loss metrics/precision metrics/recall metrics/mAP_0.5 "
    "metrics/mAP_0.5:0.95 val/box_loss val/obj_loss val/cls_loss x/lr0 x/lr1 x/lr2"
).split()
RACCOON_YAML = None  # a private copy of the raccoon split per session (val.py writes a label cache beside the labels)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)


def pytest_sessionstart(session):
    """Copy the raccoon split under the session's temp dir, so dataset caches are written there, not in tests/data."""
    global RACCOON_YAML
    import shutil

    import yaml

    root = session.config._tmp_path_factory.mktemp("raccoon")
    shutil.copytree(SHARED / "data" / "raccoon", root / "raccoon", ignore=shutil.ignore_patterns("*.cache"))
    d = yaml.safe_load((SHARED / "data" / "raccoon.yaml").read_text())
    RACCOON_YAML = root / "raccoon.yaml"
    RACCOON_YAML.write_text(yaml.safe_dump({**d, "path": str(root / "raccoon")}))


@pytest.fixture
def raccoon_yaml():
    """The session's private copy of the raccoon dataset yaml (40 val images, also used as train)."""
    return RACCOON_YAML


@pytest.fixture
def raccoon_val_copy():
    """images/val of the session's private raccoon copy (datasets built on it write their label cache there)."""
    return RACCOON_YAML.parent / "raccoon" / "images" / "val"


@pytest.fixture
def shared():
    """tests/data: the parts of ../shared the tests read (reference/, data/raccoon, images/, seeds/yamls)."""
    return SHARED


@pytest.fixture
def reference():
    """The YOLOv5 v6.1 oracle files (tests/data/reference)."""
    return SHARED / "reference"


@pytest.fixture
def ref_weights():
    """The real YOLOv5 v6.1 raccoon checkpoint."""
    return SHARED / "reference" / "raccoon_yolov5n_best.pt"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 8-train / 4-val synthetic shapes dataset (utils.synthetic) and its dataset yaml."""
    import yaml

    from utils.synthetic import make_shapes

    root = tmp_path_factory.mktemp("tiny")
    make_shapes(root / "shapes", n_train=8, n_val=4, seed=1)
    path = root / "shapes.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "path": str(root / "shapes"),
                "train": "images/train",
                "val": "images/val",
                "nc": 4,
                "names": ["circle", "square", "triangle", "cross"],
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@contextmanager
def captured_log():
    """Collect the messages the project's LOGGER emits (it writes to the real stdout, out of capsys' reach)."""
    from utils.general import LOGGER

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        yield lines
    finally:
        LOGGER.removeHandler(handler)


def tiny_train_args(data, project, *extra, name="exp", cfg="yolov5n.yaml"):
    """train.py flags of a tiny run: yolov5n-sized, img 64, batch 4, in-process loading, no AutoAnchor."""
    fixed = ["--data", data, "--cfg", cfg, "--weights", "", "--img", 64, "--batch-size", 4, "--workers", 0]
    return [str(x) for x in fixed + ["--noautoanchor", "--project", project, "--name", name, *extra]]


@functools.cache
def quiet_model(cfg):
    """A models.yolo.Model built once per cfg, quietly, without the summary's FLOPs passes (deepcopy to change it)."""
    from unittest import mock

    from models.yolo import Model
    from utils.general import LOGGER

    LOGGER.setLevel(logging.WARNING)
    try:
        with mock.patch.object(Model, "info"):
            return Model(cfg)
    finally:
        LOGGER.setLevel(logging.INFO)
