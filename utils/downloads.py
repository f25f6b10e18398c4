"""Dataset yaml checking with auto-download (zip URL, bash command or python script), and file downloads."""
import subprocess
import urllib.request
import zipfile
from multiprocessing.pool import ThreadPool
from pathlib import Path

import yaml

from utils.general import LOGGER, ROOT, check_yaml, colorstr


def safe_download(file, url, min_bytes=1E0, error_msg=''):
    """Download url to file; on failure remove the partial file and raise a clear error."""
    file = Path(file)
    LOGGER.info(f'Downloading {url} to {file}...')
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(url, file)  # noqa: S310 (URLs come from the user's dataset yaml)
        if not file.exists() or file.stat().st_size < min_bytes:
            raise OSError(f'downloaded file is missing or smaller than {min_bytes} bytes')
    except Exception as e:
        file.unlink(missing_ok=True)
        raise ConnectionError(f'download of {url} to {file} failed: {e}. {error_msg}'.strip()) from e


def attempt_download(file):
    """Return file if it exists locally; this project never fetches weights from a hub."""
    path = Path(str(file).strip().replace("'", ''))
    if path.exists():
        return str(path)
    raise FileNotFoundError(f'{path} not found. This project does not download weights automatically: '
                            f'copy the checkpoint there or pass its path (e.g. --weights path/to/best.pt).')


def unzip_file(file, dest):
    """Extract a zip archive into dest, refusing members that would escape it."""
    dest = Path(dest).resolve()
    with zipfile.ZipFile(file) as zf:
        for member in zf.namelist():
            if not (dest / member).resolve().is_relative_to(dest):
                raise ValueError(f'{file}: unsafe path {member} in zip archive')
        zf.extractall(dest)


def download(url, dir='.', unzip=True, delete=True, threads=1):
    """Download one URL or a list into dir (threaded), unzipping and deleting .zip files."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)

    def fetch(u):
        """Download (if absent) and unzip one URL."""
        f = dir / Path(u).name
        if not f.exists():
            safe_download(f, u)
        if unzip and f.suffix == '.zip':
            LOGGER.info(f'Unzipping {f}...')
            unzip_file(f, dir)
            if delete:
                f.unlink()

    urls = [url] if isinstance(url, (str, Path)) else list(url)
    if threads > 1:
        with ThreadPool(threads) as pool:
            pool.map(fetch, urls)
    else:
        for u in urls:
            fetch(u)


def _load(data):
    """Dataset dict from a yaml path (searched in the project if needed) or a dict (copied)."""
    if isinstance(data, dict):
        return dict(data)
    file = check_yaml(data)
    with open(file, errors='ignore') as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f'{file} is not a dataset yaml (expected a mapping with path/train/val/names)')
    return d


def _resolve(data):
    """Make path absolute (relative to the project root) and train/val/test absolute under it."""
    path = Path(data.get('path') or '')
    path = (path if path.is_absolute() else ROOT / path).resolve()
    data['path'] = str(path)
    for k in 'train', 'val', 'test':
        v = data.get(k)
        if v:
            data[k] = [str((path / x).resolve()) for x in v] if isinstance(v, list) else str((path / v).resolve())


def _check_names(data, source):
    """Fill names from nc or nc from names; a clear error when they disagree or are both missing."""
    names = data.get('names')
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names is None:
        if 'nc' not in data:
            raise ValueError(f'{source}: needs names (list of class names) or nc (number of classes)')
        names = [f'class{i}' for i in range(int(data['nc']))]
    data['names'] = list(names)
    data.setdefault('nc', len(names))
    if int(data['nc']) != len(names):
        raise ValueError(f"{source}: nc={data['nc']} but {len(names)} names are given")
    data['nc'] = int(data['nc'])


def _missing_val(data):
    """The val paths that do not exist."""
    val = data['val'] if isinstance(data['val'], list) else [data['val']]
    return [v for v in val if not Path(v).exists()]


def _run_download(data, s):
    """Run a dataset's download step: a .zip URL, a 'bash ...' command, or a python script."""
    if s.startswith('http') and s.endswith('.zip'):
        f = Path(data['path']).parent / Path(s).name
        safe_download(f, s)
        LOGGER.info(f'Unzipping {f}...')
        unzip_file(f, f.parent)
        f.unlink()
    elif s.startswith('bash '):
        LOGGER.info(f'Running {s} ...')
        r = subprocess.run(s, shell=True, cwd=ROOT)  # noqa: S602 (command comes from the user's dataset yaml)
        if r.returncode:
            raise RuntimeError(f'dataset download command failed with exit code {r.returncode}: {s}')
    else:
        exec(s, {'yaml': data})  # noqa: S102 (a python download script from the dataset yaml, as in v6.1)


def check_dataset(data, autodownload=True):
    """Load and validate a dataset yaml/dict, resolving paths and downloading it when val is missing."""
    source = data if isinstance(data, (str, Path)) else 'dataset dict'
    data = _load(data)
    for k in 'train', 'val':
        if not data.get(k):
            raise ValueError(f"{source}: '{k}' is required (a dir, a .txt list of images, or a list of these)")
    _check_names(data, source)
    _resolve(data)
    missing = _missing_val(data)
    if missing:
        LOGGER.info(f'Dataset not found, missing paths: {missing}')
        s = data.get('download')
        if not (s and autodownload):
            raise FileNotFoundError(f'{source}: dataset not found ({missing}) and no download step to run')
        _run_download(data, str(s).strip())
        missing = _missing_val(data)
        if missing:
            raise FileNotFoundError(f"{source}: download step ran but {missing} still does not exist")
        LOGGER.info(f"Dataset autodownload {colorstr('bold', 'green', 'success')}, saved to {data['path']}")
    return data
