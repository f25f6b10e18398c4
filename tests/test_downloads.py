"""check_dataset (paths, names, auto-download by zip URL / bash / python script), downloads, data yamls."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from utils.downloads import RELEASE_ASSETS, attempt_download, check_dataset, release_url, safe_download

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(directory):
    """Serve directory over HTTP on 127.0.0.1 (random port) in a daemon thread; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_paths_resolve_against_project_root_and_names_fill_nc():
    data = {"path": ".", "train": "data", "val": "data", "names": ["x", "y"]}
    d = check_dataset(data)
    assert d["path"] == str(ROOT) and d["train"] == str(ROOT / "data") and d["nc"] == 2
    d = check_dataset({"train": "data", "val": ["data", "utils"], "nc": 3})
    assert d["names"] == ["class0", "class1", "class2"] and d["val"] == [str(ROOT / "data"), str(ROOT / "utils")]


def test_names_nc_mismatch_and_missing_dataset_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="nc=3 but 2 names"):
        check_dataset({"path": ".", "train": "data", "val": "data", "nc": 3, "names": ["a", "b"]})
    with pytest.raises(FileNotFoundError, match="no download step"):
        check_dataset({"path": str(tmp_path / "nothing"), "train": "images", "val": "images", "nc": 1})
    with pytest.raises(FileNotFoundError, match="still does not exist"):
        check_dataset(
            {"path": str(tmp_path / "nothing"), "train": "images", "val": "images", "nc": 1, "download": "bash -c true"}
        )


def test_zip_url_download_on_loopback(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    with zipfile.ZipFile(srv / "toy.zip", "w") as zf:
        zf.writestr("toy/images/val/a.txt", "x")
        zf.writestr("toy/images/train/b.txt", "y")
    data = {"path": str(tmp_path / "datasets" / "toy"), "train": "images/train", "val": "images/val", "names": ["t"]}
    with serve(srv) as url:
        d = check_dataset({**data, "download": f"{url}/toy.zip"})
    assert Path(d["val"], "a.txt").read_text() == "x"
    assert not (tmp_path / "datasets" / "toy.zip").exists()


def test_safe_download_failure_is_clear_and_leaves_nothing(tmp_path):
    with serve(tmp_path) as url:
        with pytest.raises(ConnectionError, match="missing.zip"):
            safe_download(tmp_path / "out" / "missing.zip", f"{url}/missing.zip")
    assert not (tmp_path / "out" / "missing.zip").exists()


def test_bash_and_python_download_steps(tmp_path):
    root = tmp_path / "ds"
    d = check_dataset(
        {
            "path": str(root),
            "train": "images",
            "val": "images",
            "nc": 1,
            "download": f"bash -c 'mkdir -p {root}/images'",
        }
    )
    assert Path(d["val"]).is_dir()
    script = "from utils.synthetic import make_shapes\nmake_shapes(yaml['path'], n_train=3, n_val=2)\n"
    d = check_dataset(
        {
            "path": str(tmp_path / "shapes"),
            "train": "images/train",
            "val": "images/val",
            "names": ["a", "b", "c", "d"],
            "download": script,
        }
    )
    assert len(list(Path(d["val"]).glob("*.jpg"))) == 2 and len(list(Path(d["train"]).glob("*.jpg"))) == 3


class DroppingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; `drop.pt` announces 300 kB, sends 1 kB and closes the connection."""

    def do_GET(self):
        if self.path.endswith("drop.pt"):
            self.send_response(200)
            self.send_header("Content-Length", str(300_000))
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """A loopback server with a 200 kB yolov5n.pt and a 5 kB yolov5s.pt; YOLOV5_RELEASE_URL points at it."""
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "yolov5n.pt").write_bytes(bytes(range(256)) * 800)
    (srv / "yolov5s.pt").write_bytes(b"<html>not found</html>" * 200)
    handler = functools.partial(DroppingHandler, directory=str(srv))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("YOLOV5_RELEASE_URL", url)
    monkeypatch.setattr("utils.downloads.RETRIES", 2)
    yield url, srv
    server.shutdown()
    server.server_close()


def test_attempt_download_keeps_local_files(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"0")
    assert attempt_download(f) == str(f)
    with pytest.raises(FileNotFoundError, match="not a local file, an http"):
        attempt_download(tmp_path / "mine.pt")


def test_release_name_downloads_to_its_path(weights_server, tmp_path):
    _, srv = weights_server
    out = tmp_path / "weights" / "yolov5n.pt"
    assert attempt_download(out) == str(out)
    assert out.read_bytes() == (srv / "yolov5n.pt").read_bytes()
    assert not list(out.parent.glob(".*part"))  # the temp file was renamed, not left behind


def test_truncated_404_and_dropped_downloads_fail_cleanly(weights_server, tmp_path, monkeypatch):
    url, _ = weights_server
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(ConnectionError, match=r"got only 4400 bytes .*by hand to .*yolov5s\.pt"):
        attempt_download("yolov5s.pt")
    with pytest.raises(ConnectionError, match="HTTP Error 404"):
        attempt_download("yolov5m6.pt")
    with pytest.raises(ConnectionError, match="connection dropped after 1000 of 300000 bytes"):
        attempt_download(f"{url}/drop.pt")
    assert not list((tmp_path / "cwd").iterdir())  # nothing half-written is left


def test_url_downloads_once_into_cwd(weights_server, tmp_path, monkeypatch):
    url, srv = weights_server
    monkeypatch.chdir(tmp_path)
    assert attempt_download(f"{url}/yolov5n.pt?raw=true") == "yolov5n.pt"
    (srv / "yolov5n.pt").unlink()
    assert attempt_download(f"{url}/yolov5n.pt") == "yolov5n.pt"  # already here: not fetched again
    assert (tmp_path / "yolov5n.pt").stat().st_size == 204800


def test_offline_message_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOV5_RELEASE_URL", "http://127.0.0.1:9/v6.1")  # port 9 (discard): connection refused
    monkeypatch.setattr("utils.downloads.RETRIES", 1)
    with pytest.raises(ConnectionError) as e:
        attempt_download(tmp_path / "yolov5x6.pt")
    msg = str(e.value)
    assert "\n" not in msg and "http://127.0.0.1:9/v6.1/yolov5x6.pt by hand" in msg and "host unreachable" in msg


def test_release_url_default_is_v61():
    assert release_url("yolov5s6.pt") == "https://github.com/ultralytics/yolov5/releases/download/v6.1/yolov5s6.pt"
    assert RELEASE_ASSETS == (
        "yolov5n.pt",
        "yolov5s.pt",
        "yolov5m.pt",
        "yolov5l.pt",
        "yolov5x.pt",
        "yolov5n6.pt",
        "yolov5s6.pt",
        "yolov5m6.pt",
        "yolov5l6.pt",
        "yolov5x6.pt",
    )


def test_dataset_yamls_are_consistent():
    for name, nc in [("coco128.yaml", 80), ("coco.yaml", 80), ("shapes.yaml", 4)]:
        d = yaml.safe_load((ROOT / "data" / name).read_text())
        assert d["nc"] == nc == len(d["names"]) and d["download"]
    coco128 = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())
    assert coco128["path"] == "../datasets/coco128" and coco128["train"] == coco128["val"] == "images/train2017"
    assert coco128["download"] == "https://ultralytics.com/assets/coco128.zip"
    assert coco128["names"][0] == "person" and coco128["names"][-1] == "toothbrush"
    assert yaml.safe_load((ROOT / "data" / "shapes.yaml").read_text())["path"] == "datasets/shapes"


def test_hyp_yamls_match_v61_values():
    low = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    assert low == {
        "lr0": 0.01,
        "lrf": 0.01,
        "momentum": 0.937,
        "weight_decay": 0.0005,
        "warmup_epochs": 3.0,
        "warmup_momentum": 0.8,
        "warmup_bias_lr": 0.1,
        "box": 0.05,
        "cls": 0.5,
        "cls_pw": 1.0,
        "obj": 1.0,
        "obj_pw": 1.0,
        "iou_t": 0.2,
        "anchor_t": 4.0,
        "fl_gamma": 0.0,
        "hsv_h": 0.015,
        "hsv_s": 0.7,
        "hsv_v": 0.4,
        "degrees": 0.0,
        "translate": 0.1,
        "scale": 0.5,
        "shear": 0.0,
        "perspective": 0.0,
        "flipud": 0.0,
        "fliplr": 0.5,
        "mosaic": 1.0,
        "mixup": 0.0,
        "copy_paste": 0.0,
    }
    med = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-med.yaml").read_text())
    assert med == {**low, "lrf": 0.1, "cls": 0.3, "obj": 0.7, "scale": 0.9, "mixup": 0.1}
    high = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-high.yaml").read_text())
    assert high == med  # copy_paste would be 0.1 in v6.1; it needs segment labels, so it is 0 here


def test_shapes_yaml_download_generates_the_bundled_dataset(tmp_path):
    data = yaml.safe_load((ROOT / "data" / "shapes.yaml").read_text())
    d = check_dataset({**data, "path": str(tmp_path / "shapes")})
    assert len(list(Path(d["train"]).glob("*.jpg"))) == 240 and len(list(Path(d["val"]).glob("*.jpg"))) == 60
    assert len(list((tmp_path / "shapes" / "labels" / "val").glob("*.txt"))) == 60


def test_detect_without_arguments_is_v61_and_offline_says_what_to_pass(tmp_path):
    import detect

    opt = detect.parse_opt([])
    assert Path(opt.weights) == ROOT / "yolov5s.pt" and Path(opt.source) == ROOT / "data" / "images"
    assert sorted(p.name for p in (ROOT / "data" / "images").iterdir()) == ["bus.jpg", "zidane.jpg"]
    if (ROOT / "yolov5s.pt").exists():
        pytest.skip("yolov5s.pt was downloaded into the repo: detect.py would run instead of failing")
    env = {**os.environ, "YOLOV5_RELEASE_URL": "http://127.0.0.1:9/v6.1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "detect.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "ERROR" in line or "Traceback" in line]
    assert r.returncode == 1 and len(errors) == 1, r.stdout + r.stderr
    assert "http://127.0.0.1:9/v6.1/yolov5s.pt by hand" in errors[0] and "--weights path/to/model.pt" in errors[0]
    assert not list(ROOT.glob(".yolov5s.pt.*"))  # no temp file left in the repo


def test_detect_url_source_is_downloaded_into_cwd(weights_server, tmp_path, monkeypatch):
    import detect

    url, srv = weights_server
    shutil.copy(ROOT / "tests" / "data" / "data" / "raccoon" / "images" / "val" / "raccoon-102.jpg", srv / "r.jpg")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    weights = ROOT / "tests" / "data" / "reference" / "raccoon_yolov5n_best.pt"
    save_dir = detect.run(weights=weights, source=f"{url}/r.jpg", imgsz=320, project=tmp_path, save_txt=True)
    assert (tmp_path / "cwd" / "r.jpg").read_bytes() == (srv / "r.jpg").read_bytes()
    assert len((save_dir / "labels" / "r.txt").read_text().splitlines()) == 2  # the two raccoons
    with pytest.raises(ConnectionError, match="HTTP Error 404"):
        detect.run(weights=weights, source=f"{url}/missing.jpg", imgsz=320, project=tmp_path)


def test_backend_weights_url_404_is_one_clear_line(weights_server, tmp_path, monkeypatch):
    from models.backends import DetectMultiBackend

    url, _ = weights_server
    monkeypatch.chdir(tmp_path)
    one_line = (
        r"^download of .*/nope\.pt to nope\.pt failed: HTTP Error 404: File not found\. "
        r"Download it by hand to .*nope\.pt and pass that path instead\.$"
    )
    with pytest.raises(ConnectionError, match=one_line):
        DetectMultiBackend(f"{url}/nope.pt")
