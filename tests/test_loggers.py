"""utils/loggers.py: results.csv and TensorBoard (scalars, graph, images) as v6.1; --no-tensorboard."""

import copy
import sys
from unittest import mock

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from utils.loggers import Loggers
from utils.train_utils import RESULT_KEYS

from conftest import ROOT, captured_log, quiet_model, tiny_train_args

VARIANTS = sorted(p.stem.split("_", 1)[1] for p in (ROOT / "models").glob("yolov5_*.yaml"))


def _events(d):
    ea = EventAccumulator(str(d), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", *(f"yolov5n_{v}.yaml" for v in VARIANTS)])
def test_graph_of_every_variant(cfg, tmp_path):
    """The graph is written; the logged model keeps its mode and BatchNorm statistics (a copy is traced)."""
    model = copy.deepcopy(quiet_model(cfg)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logger = Loggers(tmp_path)
    logger.log_graph(model, torch.rand(2, 3, 64, 64))
    logger.close()
    assert _events(tmp_path).Tags()["graph"]
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_graph_failure_only_warns(tmp_path):
    logger = Loggers(tmp_path)
    with captured_log() as log, mock.patch.object(torch.jit, "trace", side_effect=RuntimeError("untraceable")):
        logger.log_graph(copy.deepcopy(quiet_model("yolov5n.yaml")), torch.rand(1, 3, 64, 64))
    logger.close()
    assert any("model graph not logged: RuntimeError: untraceable" in line for line in log)


def test_missing_tensorboard_warns_and_keeps_csv(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with captured_log() as log:
        logger = Loggers(tmp_path)
    logger.log_epoch(0, range(len(RESULT_KEYS)))
    assert logger.tb is None and any("tensorboard is not installed" in line for line in log)
    assert (tmp_path / "results.csv").read_text().count("\n") == 2


def _train(data, project, *extra):
    train.main(train.parse_opt(tiny_train_args(data, project, "--epochs", "1", *extra)))
    return project / "exp"


def test_training_writes_tensorboard_scalars_graph_images(tiny_data, tmp_path):
    d = _train(tiny_data, tmp_path)
    ea = _events(d)
    tags = ea.Tags()
    assert set(RESULT_KEYS) <= set(tags["scalars"]) and ea.Scalars("x/lr0")[0].step == 0
    assert {"train_batch0", "train_batch1", "labels", "results", "confusion_matrix"} <= set(tags["images"])
    assert tags["graph"]


def test_no_tensorboard_flag(tiny_data, tmp_path):
    d = _train(tiny_data, tmp_path, "--no-tensorboard", "--noval", "--nosave")
    assert (d / "results.csv").is_file() and not list(d.glob("events.out.tfevents.*"))
