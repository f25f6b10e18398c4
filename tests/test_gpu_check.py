"""benchmarks/gpu_check.py: its CPU path (--device cpu --quick) runs, one failing check does not stop the rest."""

import sys
from types import SimpleNamespace

import pytest

from benchmarks import gpu_check
from models.variants import variant_entries


def _rows(out):
    lines = (out / "gpu_check.md").read_text().splitlines()
    return {r.split("|")[1].strip(): r.split("|")[2].strip() for r in lines if r.startswith("| ") and "---" not in r}


@pytest.mark.slow  # a training, val.py --half and AutoBatch per variant in subprocesses (about a minute)
def test_quick_cpu_path_on_two_variants(tmp_path):
    argv = ["--device", "cpu", "--quick", "--variants", "SE", "ECA", "--checks", "train", "val", "--out", str(tmp_path)]
    assert gpu_check.main(argv) == 0
    rows = _rows(tmp_path)
    assert rows.pop("check") == "result"
    assert rows == {"train SE": "pass", "train ECA": "pass", "val --half SE": "pass", "val --half ECA": "pass"}


@pytest.mark.slow
def test_quick_cpu_path_every_variant_and_check(tmp_path):
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    for name in ["plain", *(e.name for e in variant_entries())]:
        assert rows[f"train {name}"] == rows[f"val --half {name}"] == "pass"
    assert rows["AutoBatch"] == rows["pytest -m cuda"] == rows["speed.py rows (CPU)"] == "pass"


def test_a_failing_check_fails_its_row_and_its_dependants_only(tmp_path):
    def check(name, code):
        return gpu_check.Check(name, [sys.executable, "-c", code], timeout=60)

    broken, fine = check("train broken", "raise SystemExit(3)"), check("train fine", "print('ok')")
    broken.after.append(check("val broken", "print('never')"))
    fine.after.append(check("val fine", "print('ok')"))
    opt = SimpleNamespace(budget=120, jobs=2)
    checks = gpu_check.run_all([broken, fine], [], [check("last", "print('ok')")], opt, tmp_path)
    assert [(c.name, c.result) for c in checks] == [
        ("train broken", "fail"),
        ("train fine", "pass"),
        ("val broken", "fail"),
        ("val fine", "pass"),
        ("last", "pass"),
    ]
    assert checks[0].detail.startswith("exit 3") and checks[2].detail == "not run: train broken failed"
    assert (tmp_path / "train_broken.log").is_file()


def test_unknown_variant_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_opt(["--device", "cpu", "--variants", "NoSuchBlock"])
    assert "--variants NoSuchBlock: not registered" in capsys.readouterr().err
