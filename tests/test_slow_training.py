"""End-to-end training checks (minutes on CPU): run with `python -m pytest -m slow`."""

import csv

import pytest

import train
from utils.metrics import fitness

import conftest

pytestmark = pytest.mark.slow


def _best_map50(results_csv):
    with open(results_csv) as f:
        rows = [[float(x) for x in row] for row in list(csv.reader(f))[1:]]
    best = max(rows, key=lambda r: fitness([r[4:8]])[0])
    return best[6], [r[1] + r[2] + r[3] for r in rows]


def test_raccoon_finetune_keeps_map(tmp_path, ref_weights):
    """Fine-tuning the v6.1 raccoon checkpoint for 3 epochs keeps mAP@.5 >= 0.92 (v6.1 itself: 0.947-0.951)."""
    train.main(
        train.parse_opt(
            [
                "--data",
                str(conftest.RACCOON_YAML),
                "--cfg",
                "yolov5n.yaml",
                "--weights",
                str(ref_weights),
                "--img",
                "320",
                "--epochs",
                "3",
                "--workers",
                "2",
                "--project",
                str(tmp_path),
                "--name",
                "ft",
            ]
        )
    )
    map50, _ = _best_map50(tmp_path / "ft" / "results.csv")
    assert map50 >= 0.92
