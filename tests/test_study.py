"""benchmarks/study.py: paired t statistics against scipy, run states, and a 2 variants x 2 seeds x 1 epoch study."""

import csv
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks import study
from utils.checkpoints import save_checkpoint

from conftest import ROOT


def test_paired_interval_matches_scipy():
    a = np.array([0.61, 0.58, 0.66, 0.70, 0.59])
    b = np.array([0.55, 0.57, 0.60, 0.64, 0.60])
    mean, lo, hi = study.paired_interval(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx((a - b).mean(), rel=1e-12)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert lo < mean < hi
    _, lo99, hi99 = study.paired_interval(a, b, confidence=0.99)
    assert lo99 < lo and hi < hi99


def test_paired_interval_of_one_pair_has_no_bounds_and_std_of_one_is_zero():
    mean, lo, hi = study.paired_interval([0.7], [0.5])
    assert mean == pytest.approx(0.2) and math.isnan(lo) and math.isnan(hi)
    assert study.mean_std([0.4]) == (0.4, 0.0)
    assert study.mean_std([1.0, 2.0, 4.0])[1] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))


def test_summarise_pairs_each_variant_with_the_baseline_of_the_same_seed():
    rows = [("baseline", "yolov5n.yaml"), ("SE", "models/yolov5n_SE.yaml")]
    base = {0: (0.50, 0.30), 1: (0.60, 0.35), 2: (0.55, 0.32)}
    se = {0: (0.52, 0.31), 1: (0.63, 0.38), 2: (0.56, 0.32)}
    runs = {**{("baseline", s): v for s, v in base.items()}, **{("SE", s): v for s, v in se.items()}}
    table = study.summarise(rows, runs, [0, 1, 2])
    a, b = [se[s][1] for s in range(3)], [base[s][1] for s in range(3)]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert table[1]["cfg"] == "yolov5n_SE.yaml" and table[1]["mAP@.5:.95 mean"] == pytest.approx(np.mean(a))
    assert table[1]["mAP@.5:.95 std"] == pytest.approx(np.std(a, ddof=1))
    assert (table[1]["mAP@.5:.95 lo"], table[1]["mAP@.5:.95 hi"]) == pytest.approx((ci.low, ci.high))
    assert table[0]["mAP@.5 diff"] == 0.0 and table[0]["mAP@.5 mean"] == pytest.approx(0.55)


def test_difference_cell_marks_intervals_that_exclude_zero():
    row = {"variant": "SE", "mAP@.5 diff": 0.02, "mAP@.5 lo": 0.01, "mAP@.5 hi": 0.03}
    assert study._diff_cell(row, "mAP@.5") == "+0.020 [+0.010, +0.030] *"
    row["mAP@.5 lo"] = -0.01
    assert study._diff_cell(row, "mAP@.5") == "+0.020 [-0.010, +0.030]"
    row.update({"mAP@.5 diff": 0.00014, "mAP@.5 lo": 0.00013, "mAP@.5 hi": 0.00015})  # excludes 0 below print precision
    assert study._diff_cell(row, "mAP@.5") == "+0.000 [+0.000, +0.000]"


def test_run_state_new_interrupted_done(tmp_path):
    run = tmp_path / "SE_seed0"
    assert study.run_state(run) == "new"
    (run / "weights").mkdir(parents=True)
    model = torch.nn.Conv2d(1, 1, 1)
    save_checkpoint({"epoch": 0, "model": model}, run / "weights" / "last.pt")
    assert study.run_state(run) == "interrupted"
    save_checkpoint({"epoch": -1, "model": model}, run / "weights" / "last.pt")
    assert study.run_state(run) == "done"


def test_no_variants_gives_the_plain_model_alone(tmp_path):
    opt = study.parse_opt(["--data", "shapes.yaml", "--out", str(tmp_path)])
    assert study.model_rows(study.absolute_paths(opt), opt.scale) == [("baseline", "yolov5n.yaml")]
    assert opt.data.endswith("shapes.yaml") and opt.data.startswith("/")
    assert opt.runs == ROOT / "runs" / "study" / tmp_path.name


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.parse_opt(["--data", "x.yaml", "--cfg", "y.yaml", "--out", str(tmp_path), "--seeds", "1", "1"])
    assert "--seeds distinct" in capsys.readouterr().err
    argv = [
        "--data",
        "shapes.yaml",
        "--cfg",
        "models/yolov5_SE.yaml",
        "--out",
        str(tmp_path),
        "--weights",
        str(tmp_path / "missing.pt"),
    ]
    assert study.main(argv) == 1


@pytest.mark.slow
def test_study_two_variants_two_seeds(tiny_data, tmp_path):
    out, runs_dir = tmp_path / "study", tmp_path / "runs"
    argv = [
        "--data",
        str(tiny_data),
        "--cfg",
        str(ROOT / "models/yolov5_SE.yaml"),
        "--scale",
        "n",
        "--img",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--seeds",
        "0",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--train-args=--noautoanchor --save-period 1",
        "--repeats",
        "2",
        "--out",
        str(out),
        "--runs",
        str(runs_dir),
    ]
    assert study.main(argv) == 0
    with open(out / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["baseline", "SE"] and {r["seeds"] for r in rows} == {"2"}
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["variant"], r["seed"]) for r in runs) == [
        ("SE", "0"),
        ("SE", "1"),
        ("baseline", "0"),
        ("baseline", "1"),
    ]
    se = [float(r["mAP@.5:.95"]) for r in runs if r["variant"] == "SE"]
    base = [float(r["mAP@.5:.95"]) for r in runs if r["variant"] == "baseline"]
    assert float(rows[1]["mAP@.5:.95 mean"]) == pytest.approx(np.mean(se), abs=1e-5)
    assert float(rows[1]["mAP@.5:.95 diff"]) == pytest.approx(np.mean(se) - np.mean(base), abs=1e-5)
    assert int(rows[1]["params"]) > int(rows[0]["params"]) and float(rows[0]["latency (ms)"]) > 0
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| SE | yolov5n_SE.yaml |" in (out / "study.md").read_text()
    runs_csv, logs = (out / "runs.csv").read_text(), sorted((runs_dir / "logs").iterdir())
    weights = runs_dir / "SE_seed1" / "weights"
    shutil.copy(weights / "epoch0.pt", weights / "last.pt")  # as if killed before the final strip
    assert study.run_state(runs_dir / "SE_seed1") == "interrupted"
    sizes = {p.name: p.stat().st_size for p in logs}
    assert study.main(argv) == 0  # only the interrupted run is continued, with --resume
    assert all(study.run_state(runs_dir / f"{v}_seed{s}") == "done" for v in ("baseline", "SE") for s in (0, 1))
    grown = [p.name for p in logs if p.stat().st_size != sizes[p.name]]
    assert grown == ["SE_seed1.log"] and "--resume" in (runs_dir / "logs" / "SE_seed1.log").read_text()
    assert (out / "runs.csv").read_text() == runs_csv
    assert study.main([*argv, "--epochs", "2"]) == 1  # the same --out with other settings is refused
