"""check_dataset (paths, names, auto-download by zip URL / bash / python script), downloads, data yamls."""
import functools
import http.server
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from utils.downloads import attempt_download, check_dataset, safe_download

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(directory):
    """Serve directory over HTTP on 127.0.0.1 (random port) in a daemon thread; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_paths_resolve_against_project_root_and_names_fill_nc():
    data = {'path': '.', 'train': 'data', 'val': 'data', 'names': ['x', 'y']}
    d = check_dataset(data)
    assert d['path'] == str(ROOT) and d['train'] == str(ROOT / 'data') and d['nc'] == 2
    d = check_dataset({'train': 'data', 'val': ['data', 'utils'], 'nc': 3})
    assert d['names'] == ['class0', 'class1', 'class2'] and d['val'] == [str(ROOT / 'data'), str(ROOT / 'utils')]


def test_names_nc_mismatch_and_missing_dataset_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match='nc=3 but 2 names'):
        check_dataset({'path': '.', 'train': 'data', 'val': 'data', 'nc': 3, 'names': ['a', 'b']})
    with pytest.raises(FileNotFoundError, match='no download step'):
        check_dataset({'path': str(tmp_path / 'nothing'), 'train': 'images', 'val': 'images', 'nc': 1})
    with pytest.raises(FileNotFoundError, match='still does not exist'):
        check_dataset({'path': str(tmp_path / 'nothing'), 'train': 'images', 'val': 'images', 'nc': 1,
                       'download': 'bash -c true'})


def test_zip_url_download_on_loopback(tmp_path):
    srv = tmp_path / 'srv'
    srv.mkdir()
    with zipfile.ZipFile(srv / 'toy.zip', 'w') as zf:
        zf.writestr('toy/images/val/a.txt', 'x')
        zf.writestr('toy/images/train/b.txt', 'y')
    data = {'path': str(tmp_path / 'datasets' / 'toy'), 'train': 'images/train', 'val': 'images/val', 'names': ['t']}
    with serve(srv) as url:
        d = check_dataset({**data, 'download': f'{url}/toy.zip'})
    assert Path(d['val'], 'a.txt').read_text() == 'x'
    assert not (tmp_path / 'datasets' / 'toy.zip').exists()


def test_safe_download_failure_is_clear_and_leaves_nothing(tmp_path):
    with serve(tmp_path) as url:
        with pytest.raises(ConnectionError, match='missing.zip'):
            safe_download(tmp_path / 'out' / 'missing.zip', f'{url}/missing.zip')
    assert not (tmp_path / 'out' / 'missing.zip').exists()


def test_bash_and_python_download_steps(tmp_path):
    root = tmp_path / 'ds'
    d = check_dataset({'path': str(root), 'train': 'images', 'val': 'images', 'nc': 1,
                       'download': f"bash -c 'mkdir -p {root}/images'"})
    assert Path(d['val']).is_dir()
    script = "from utils.synthetic import make_shapes\nmake_shapes(yaml['path'], n_train=3, n_val=2)\n"
    d = check_dataset({'path': str(tmp_path / 'shapes'), 'train': 'images/train', 'val': 'images/val',
                       'names': ['a', 'b', 'c', 'd'], 'download': script})
    assert len(list(Path(d['val']).glob('*.jpg'))) == 2 and len(list(Path(d['train']).glob('*.jpg'))) == 3


def test_attempt_download_is_local_only(tmp_path):
    f = tmp_path / 'w.pt'
    f.write_bytes(b'0')
    assert attempt_download(f) == str(f)
    with pytest.raises(FileNotFoundError, match='does not download weights'):
        attempt_download(tmp_path / 'yolov5s.pt')


def test_dataset_yamls_are_consistent():
    for name, nc in [('coco128.yaml', 80), ('coco.yaml', 80), ('shapes.yaml', 4)]:
        d = yaml.safe_load((ROOT / 'data' / name).read_text())
        assert d['nc'] == nc == len(d['names']) and d['download']
    coco128 = yaml.safe_load((ROOT / 'data' / 'coco128.yaml').read_text())
    assert coco128['path'] == '../datasets/coco128' and coco128['train'] == coco128['val'] == 'images/train2017'
    assert coco128['download'] == 'https://ultralytics.com/assets/coco128.zip'
    assert coco128['names'][0] == 'person' and coco128['names'][-1] == 'toothbrush'
    assert yaml.safe_load((ROOT / 'data' / 'shapes.yaml').read_text())['path'] == 'datasets/shapes'


def test_hyp_yamls_match_v61_values():
    low = yaml.safe_load((ROOT / 'data' / 'hyps' / 'hyp.scratch-low.yaml').read_text())
    assert low == {'lr0': 0.01, 'lrf': 0.01, 'momentum': 0.937, 'weight_decay': 0.0005, 'warmup_epochs': 3.0,
                   'warmup_momentum': 0.8, 'warmup_bias_lr': 0.1, 'box': 0.05, 'cls': 0.5, 'cls_pw': 1.0,
                   'obj': 1.0, 'obj_pw': 1.0, 'iou_t': 0.2, 'anchor_t': 4.0, 'fl_gamma': 0.0, 'hsv_h': 0.015,
                   'hsv_s': 0.7, 'hsv_v': 0.4, 'degrees': 0.0, 'translate': 0.1, 'scale': 0.5, 'shear': 0.0,
                   'perspective': 0.0, 'flipud': 0.0, 'fliplr': 0.5, 'mosaic': 1.0, 'mixup': 0.0, 'copy_paste': 0.0}
    med = yaml.safe_load((ROOT / 'data' / 'hyps' / 'hyp.scratch-med.yaml').read_text())
    assert med == {**low, 'lrf': 0.1, 'cls': 0.3, 'obj': 0.7, 'scale': 0.9, 'mixup': 0.1}
    high = yaml.safe_load((ROOT / 'data' / 'hyps' / 'hyp.scratch-high.yaml').read_text())
    assert high == med  # copy_paste would be 0.1 in v6.1; it needs segment labels, so it is 0 here


def test_shapes_yaml_download_generates_the_bundled_dataset(tmp_path):
    data = yaml.safe_load((ROOT / 'data' / 'shapes.yaml').read_text())
    d = check_dataset({**data, 'path': str(tmp_path / 'shapes')})
    assert len(list(Path(d['train']).glob('*.jpg'))) == 240 and len(list(Path(d['val']).glob('*.jpg'))) == 60
    assert len(list((tmp_path / 'shapes' / 'labels' / 'val').glob('*.txt'))) == 60
