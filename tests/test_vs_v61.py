"""benchmarks/vs_v61.py: the side-by-side runner, with this project's own train.py/val.py standing in for v6.1."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import speed, vs_v61

from conftest import ROOT


def test_dataset_copy_has_an_absolute_path_and_no_label_cache(tmp_path):
    from utils.synthetic import make_shapes

    make_shapes(tmp_path / "src" / "shapes", n_train=2, n_val=1, seed=1)
    (tmp_path / "src" / "shapes" / "labels" / "train.cache").write_bytes(b"another tool's cache")
    data = tmp_path / "src" / "shapes.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "src" / "shapes"), "train": "images/train", "nc": 4}))
    (tmp_path / "side").mkdir()
    copied = yaml.safe_load(Path(vs_v61.copy_dataset(data, tmp_path / "side")).read_text())
    assert copied == {"path": str(tmp_path / "side" / "shapes"), "train": "images/train", "nc": 4}
    assert len(list((tmp_path / "side" / "shapes" / "labels").rglob("*.txt"))) == 3
    assert not list((tmp_path / "side").rglob("*.cache"))


def test_v61_folder_without_train_py_is_refused(tmp_path):
    opt = vs_v61.parse_opt(["--v61", str(tmp_path), "--weights", __file__, "--data", __file__, "--hyp", __file__])
    with pytest.raises(SystemExit, match="no train.py in it"):
        vs_v61.v61_script(opt, "train")
    opt.v61 = "yolov5"
    assert vs_v61.v61_script(opt, "val") == ([sys.executable, "-u", "-m", "yolov5.val"], None)


def test_timed_process_reads_stderr_lines_and_names_a_failure(tmp_path):
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True)"
    wall, cpu, lines = speed.timed_process([sys.executable, "-c", code], tmp_path)
    assert sorted(line for _, line in lines) == ["err", "out"] and wall > 0 and cpu >= 0
    with pytest.raises(RuntimeError, match=r"exited with 3:\nbye"):
        speed.timed_process([sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"], tmp_path)


@pytest.mark.slow  # two 1-epoch trainings and two val.py runs (about a minute)
def test_vs_v61_against_this_checkout_gives_the_same_map_on_both_sides(tiny_data, tmp_path):
    weights = tmp_path / "n4.pt"
    subprocess.run(
        [sys.executable, "train.py", "--data", str(tiny_data), "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64"]
        + ["--epochs", "1", "--batch-size", "4", "--project", str(tmp_path), "--name", "w"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (tmp_path / "w" / "weights" / "best.pt").rename(weights)
    argv = ["--v61", str(ROOT), "--weights", str(weights), "--data", str(tiny_data), "--img", "64", "--epochs", "1"]
    argv += ["--batch-size", "4", "--val-img", "64", "--val-batch-size", "4", "--repeats", "1", "--warmup", "0"]
    assert vs_v61.main([*argv, "--save", str(tmp_path / "f.json")]) == 0
    figures = yaml.safe_load((tmp_path / "f.json").read_text())["figures"]
    assert figures["ours"]["mAP@.5"] == figures["v6.1"]["mAP@.5"]  # same code, same seed: same training
    assert figures["ours"]["whole-process s (1 epochs)"] > 0 and figures["v6.1"]["val.py process s"] > 0
