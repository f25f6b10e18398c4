"""benchmarks/compare.py, train_speed.py and speed.py on tiny inputs."""

import csv
import json

import pytest
import yaml

from benchmarks import compare, speed, train_speed
from models.yolo import Model
from utils.torch_utils import exact_flops, legacy_gflops

from conftest import ROOT, V61_RESULTS_HEADER, captured_log

MODELS = ROOT / "models"


def _fake_run(root, name, cfg, maps=None):
    """runs/<name>/opt.yaml with cfg, and a v6.1-padded results.csv with one row per (mAP@.5, mAP@.5:.95)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "opt.yaml").write_text(yaml.safe_dump({"weights": "", "cfg": cfg, "epochs": len(maps or [])}))
    if maps is not None:
        lines = [",".join("%20s" % k for k in V61_RESULTS_HEADER)]
        for e, (m50, m) in enumerate(maps):
            lines.append(",".join("%20s" % v for v in [e, 0.1, 0.05, 0.02, 0.5, 0.4, m50, m, 0.1, 0.05, 0.02, 0, 0, 0]))
        (d / "results.csv").write_text("\n".join(lines) + "\n")


def test_best_run_picked_by_fitness_for_the_same_model(tmp_path):
    _fake_run(tmp_path, "exp", "yolov5n_SE.yaml", [(0.9, 0.1), (0.5, 0.3), (0.4, 0.2)])  # fitness .18, .32, .22
    _fake_run(tmp_path, "exp2", "yolov5n_SE.yaml", [(0.6, 0.25)])  # fitness .285: a worse run of the same model
    _fake_run(tmp_path, "exp3", "models/yolov5_SE.yaml", [(0.99, 0.9)])  # the l multiples: another model
    _fake_run(tmp_path, "exp4", "yolov5n_CBAM.yaml")  # no results.csv: ignored
    _fake_run(tmp_path, "exp5", "yolov5_Missing.yaml", [(0.9, 0.9)])  # unknown yaml: skipped with a warning
    with captured_log() as log:
        maps = compare.trained_maps(tmp_path)
    assert any("exp5 skipped" in line and "yolov5_Missing.yaml" in line for line in log)
    assert maps[compare.model_key("yolov5n_SE.yaml")] == pytest.approx((0.5, 0.3))
    assert maps[compare.model_key("yolov5_SE.yaml")] == pytest.approx((0.99, 0.9))
    assert compare.model_key("yolov5n_CBAM.yaml") not in maps
    assert compare.model_key("models/yolov5n.yaml") == compare.model_key("yolov5n.yaml")


def test_bad_cfg_arguments_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="yolov5n.yaml: expected a variant yaml"):
        compare.model_rows(["models/yolov5n.yaml"], "s")
    with pytest.raises(FileNotFoundError, match="nothing_"):
        compare.expand_cfgs([str(tmp_path / "nothing_*.yaml")])
    assert compare.model_rows(["models/yolov5_SE.yaml"], "m") == [
        ("baseline", "yolov5m.yaml"),
        ("SE", "models/yolov5m_SE.yaml"),
    ]


def test_compare_writes_table_csv_and_plot(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _fake_run(runs, "exp", "yolov5n_SE.yaml", [(0.5, 0.3)])
    argv = [
        "--cfg",
        str(MODELS / "yolov5_SE.yaml"),
        str(MODELS / "yolov5_CBAM.yaml"),
        str(MODELS / "yolov5_Coord*.yaml"),
        "--scale",
        "n",
        "--img",
        "64",
        "--repeats",
        "1",
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    assert compare.main(argv) == 0
    assert capsys.readouterr().out.startswith("| variant | cfg | params |")
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == compare.COLUMNS
    assert [r["cfg"] for r in rows] == ["yolov5n.yaml", "yolov5n_SE.yaml", "yolov5n_CBAM.yaml", "yolov5n_CoordAtt.yaml"]
    assert rows[0]["variant"] == "baseline"
    assert (float(rows[1]["mAP@.5"]), float(rows[1]["mAP@.5:.95"])) == (0.5, 0.3)
    assert rows[0]["mAP@.5"] == rows[2]["mAP@.5:.95"] == ""
    with compare.quiet_logging():
        se = Model("yolov5n_SE.yaml")
    assert int(rows[1]["params"]) == sum(p.numel() for p in se.parameters())
    assert float(rows[1]["GFLOPs (exact)"]) == pytest.approx(exact_flops(se, 64) / 1e9, rel=1e-5)
    assert float(rows[1]["GFLOPs (v6.1)"]) == pytest.approx(legacy_gflops(se, 64), rel=1e-5)
    assert all(float(r["latency (ms)"]) > 0 and float(r["peak memory (MB)"]) > 0 for r in rows)
    md = (out / "compare.md").read_text()
    assert "| baseline | yolov5n.yaml |" in md and md.count("\n| ") == 6  # header, rule, 4 rows
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_speed_prints_positive_throughput(tiny_data, capsys):
    argv = [
        "--cfg",
        "yolov5n.yaml",
        "--img",
        "64",
        "--batch-size",
        "2",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--data",
        str(tiny_data),
    ]
    assert train_speed.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3] == "| " + " | ".join(train_speed.COLUMNS) + " |"
    model, img, batch, ips, spi, rss, params = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert (model, img, batch) == ("yolov5n.yaml", "64", "2")
    assert float(ips) > 0 and float(spi) > 0 and float(rss) > 0
    assert int(params) > 1_000_000


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A yolov5n checkpoint with the tiny dataset's 4 classes."""
    from utils.checkpoints import save_checkpoint

    with compare.quiet_logging():
        model = Model("yolov5n.yaml", nc=4)
    model.names = ["circle", "square", "triangle", "cross"]
    path = tmp_path_factory.mktemp("speed") / "n4.pt"
    save_checkpoint({"epoch": -1, "model": model.half(), "ema": None}, path)
    return path


@pytest.mark.slow  # every phase of speed.py, a whole train.py process included (about a minute)
def test_speed_saves_figures_and_prints_baseline_ratios(tiny_data, tiny_weights, tmp_path, capsys):
    argv = [
        "--weights",
        str(tiny_weights),
        "--data",
        str(tiny_data),
        "--img",
        "64",
        "--batch-size",
        "4",
        "--val-batch-size",
        "2",
        "--workers",
        "0",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--whole-epochs",
        "1",
    ]
    assert speed.main(argv + ["--save", str(tmp_path / "a.json")]) == 0
    saved = json.loads((tmp_path / "a.json").read_text())
    figures = saved["figures"]
    assert saved["setup"]["machine"] == speed.machine("cpu") and "cores" in saved["setup"]["machine"]
    whole = ("imports s", "start-up s (to the first epoch)", "first epoch s", "after training s")
    assert figures["whole-process s (1 epochs)"] > sum(figures[k] for k in whole[1:]) - 1e-6 > 0
    assert 0 < figures[whole[0]] < figures[whole[1]] and figures["whole-process CPU s"] > 0
    assert figures["train images/s"] > 0 and figures["detect latency ms/img (batch 1)"] > 0
    assert figures["val inference ms/img (batch 2)"] > 0 and figures["val NMS ms/img"] >= 0
    assert all(figures[f"{p} peak RSS (MB)"] > 50 for p in speed.PHASES)
    assert 0 <= figures["mAP@.5"] <= 1 and figures["mAP@.5:.95"] <= figures["mAP@.5"]
    halved = {
        **figures,
        "train images/s": figures["train images/s"] / 2,
        "val NMS ms/img": 2 * figures["val NMS ms/img"],
    }
    (tmp_path / "b.json").write_text(json.dumps({"setup": {}, "figures": halved}))
    capsys.readouterr()
    assert speed.main(argv + ["--phases", "val", "--baseline", str(tmp_path / "b.json")]) == 0
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
        for r in capsys.readouterr().out.splitlines()
        if r.startswith("| ")
    }
    assert "train images/s" not in rows  # only the phases asked for
    assert rows["mAP@.5"][3] == "+0.0000"  # same weights, same data: same accuracy
    assert rows["val NMS ms/img"][2] == f"{halved['val NMS ms/img']:.4g}"


def test_speed_ratio_direction_and_bad_baseline(tmp_path):
    assert speed.ratio("train images/s", 30.0, 20.0) == pytest.approx(1.5)
    assert speed.ratio("val NMS ms/img", 10.0, 20.0) == pytest.approx(2.0)
    assert speed.ratio("mAP@.5", 0.9, 0.8) is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"figures": 3}')
    with pytest.raises(ValueError, match="bad.json: not a speed.py --save file"):
        speed.load_baseline(bad)


def test_attention_speed_gflops_column_counts_forward_and_backward(capsys):
    import torch

    from benchmarks import attention_speed

    conv = attention_speed.make_block(attention_speed.PLAIN, 16).train()
    x = torch.randn(2, 16, 8, 4, requires_grad=True)
    assert attention_speed.fwd_bwd_flops(conv, x) == 3 * 2 * 16 * 16 * 9 * 2 * 8 * 4  # forward, d input, d weight
    attention_speed.main(["--img", "32", "--scale", "n", "--runs", "1", "--warmup", "1", "--blocks", "ECA"])
    lines = capsys.readouterr().out.strip().splitlines()
    plain = [float(v.split()[-1]) for v in lines[-6].split(": ")[1].split(", ")]
    assert lines[-6].startswith("plain conv 3x3") and len(plain) == 3 and min(plain) > 0
    assert lines[-4].startswith("| block | P3 time | P3 memory | P3 GFLOP/s | P4 time")
    se = [c.strip() for c in lines[-2].strip("|").split("|")]
    assert se[0] == "SE" and len(se) == 10 and float(se[3]) > 0  # SE's two linear layers are counted


def test_whole_phases_from_log_times():
    lines = [
        (1.5, "train: weights=..."),
        (4.0, "Starting training for 2 epochs..."),
        (4.1, "     Epoch   gpu_mem       box"),
        (10.1, "     Epoch   gpu_mem       box"),
        (14.1, "2 epochs completed in 0.003 hours."),
    ]
    phases = speed.whole_phases(17.0, [(t, line.strip()) for t, line in lines])
    assert phases == {
        "imports s": 1.5,
        "start-up s (to the first epoch)": 4.0,
        "first epoch s": pytest.approx(6.0),
        "other epochs s (mean)": pytest.approx(4.0),
        "after training s": pytest.approx(2.9),
    }
