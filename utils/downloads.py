"""Downloads (weights by name or URL, dataset zips) and dataset yaml checking with auto-download."""

import http.client
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from multiprocessing.pool import ThreadPool
from pathlib import Path

import yaml
from tqdm import tqdm

from utils.general import LOGGER, ROOT, check_yaml, colorstr

TQDM_BAR = "{l_bar}{bar:10}{r_bar}"
RELEASE_URL = "https://github.com/ultralytics/yolov5/releases/download/v6.1"
RELEASE_URL_ENV = "YOLOV5_RELEASE_URL"  # overrides RELEASE_URL (a mirror, or a local server in tests)
RELEASE_ASSETS = tuple(f"yolov5{s}{p}.pt" for p in ("", "6") for s in "nsmlx")
MIN_WEIGHTS_BYTES = 1e5  # a smaller .pt is an error page or a cut-off transfer, as v6.1 judges it
RETRIES = 3


def is_url(s):
    """True for an http(s):// address."""
    return str(s).lower().startswith(("http://", "https://"))


def release_url(name):
    """Where the official v6.1 release asset `name` is fetched from (YOLOV5_RELEASE_URL overrides the base)."""
    return (os.environ.get(RELEASE_URL_ENV) or RELEASE_URL).rstrip("/") + f"/{name}"


def _stream_to(response, f, desc):
    """Copy an HTTP response into the open file f with a tqdm bar; raises when fewer bytes come than announced."""
    total = int(response.headers.get("Content-Length") or 0)
    done = 0
    with tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        bar_format=TQDM_BAR,
        disable=not total,
    ) as bar:
        while chunk := response.read(1 << 16):
            f.write(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    if total and done != total:
        raise OSError(f"connection dropped after {done} of {total} bytes")


def _fetch_once(url, file, timeout):
    """One attempt: stream url into a temp file beside file (created only once the server answers)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=file.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                _stream_to(r, f, file.name)
            return Path(tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _retryable(e):
    """Network hiccups are retried; an HTTP 4xx answer (404, 403) is final."""
    return not (isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500)


def _describe(e):
    """A one-line reason: 'HTTP Error 404: Not Found', 'no network (Name or service not known)', ..."""
    if isinstance(e, urllib.error.HTTPError):
        return str(e)
    if isinstance(e, urllib.error.URLError):
        return f"no network or host unreachable ({getattr(e.reason, 'strerror', None) or e.reason})"
    return f"{type(e).__name__}: {e}"


def safe_download(file, url, min_bytes=1e0, error_msg="", retries=None, timeout=30):
    """Download url to file atomically (temp + rename) with a progress bar, retries and a size check.

    Raises ConnectionError with one line naming the URL and the file when every attempt fails."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.info(f"Downloading {url} to {file}...")
    reason, retries = "", retries or RETRIES
    for attempt in range(1, retries + 1):
        try:
            tmp = _fetch_once(url, file, timeout)
        except (OSError, http.client.HTTPException) as e:
            reason = _describe(e)
            if not _retryable(e) or attempt == retries:
                break
            LOGGER.info(f"Download attempt {attempt}/{retries} failed ({reason}), retrying...")
            time.sleep(0.5 * attempt)
            continue
        if tmp.stat().st_size >= min_bytes:
            os.replace(tmp, file)
            return file
        reason = f"got only {tmp.stat().st_size} bytes (< {min_bytes:g}: not a complete file)"
        tmp.unlink()
        break
    msg = f"download of {url} to {file} failed: {reason}. {error_msg}".strip()
    raise ConnectionError(msg)


def download_url(url, min_bytes=1e0):
    """Download an http(s) URL into the current folder under the URL's file name (kept if already there)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise ValueError(f"{url}: the URL names no file to download")
    if not Path(name).is_file():
        safe_download(
            name,
            url,
            min_bytes=min_bytes,
            error_msg=f"Download it by hand to {Path(name).resolve()} and pass that path instead.",
        )
    return name


def attempt_download(file):
    """A local path for weights: the file itself, else a download of an http(s) URL or a v6.1 release asset name."""
    s = str(file).strip().replace("'", "")
    if is_url(s):
        return download_url(s, min_bytes=MIN_WEIGHTS_BYTES)
    path = Path(s)
    if path.exists():
        return str(path)
    if path.name in RELEASE_ASSETS:
        url = release_url(path.name)
        safe_download(
            path,
            url,
            min_bytes=MIN_WEIGHTS_BYTES,
            error_msg=f"Offline? Download {url} by hand to "
            f"{path.resolve()}, or pass a local file: "
            f"--weights path/to/model.pt",
        )
        return str(path)
    raise FileNotFoundError(
        f"{s} not found (not a local file, an http(s) URL or a YOLOv5 v6.1 release name like yolov5s.pt)"
    )


def unzip_file(file, dest):
    """Extract a zip archive into dest, refusing members that would escape it."""
    dest = Path(dest).resolve()
    with zipfile.ZipFile(file) as zf:
        for member in zf.namelist():
            if not (dest / member).resolve().is_relative_to(dest):
                raise ValueError(f"{file}: unsafe path {member} in zip archive")
        zf.extractall(dest)


def download(url, dir=".", unzip=True, delete=True, threads=1):
    """Download one URL or a list into dir (threaded), unzipping and deleting .zip files."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)

    def fetch(u):
        """Download (if absent) and unzip one URL."""
        f = dir / Path(u).name
        if not f.exists():
            safe_download(f, u)
        if unzip and f.suffix == ".zip":
            LOGGER.info(f"Unzipping {f}...")
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
    with open(file, errors="ignore") as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{file} is not a dataset yaml (expected a mapping with path/train/val/names)")
    return d


def _resolve(data):
    """Make path absolute (relative to the project root) and train/val/test absolute under it."""
    path = Path(data.get("path") or "")
    path = (path if path.is_absolute() else ROOT / path).resolve()
    data["path"] = str(path)
    for k in "train", "val", "test":
        v = data.get(k)
        if v:
            data[k] = [str((path / x).resolve()) for x in v] if isinstance(v, list) else str((path / v).resolve())


def _check_names(data, source):
    """Fill names from nc or nc from names; a clear error when they disagree or are both missing."""
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names is None:
        if "nc" not in data:
            raise ValueError(f"{source}: needs names (list of class names) or nc (number of classes)")
        names = [f"class{i}" for i in range(int(data["nc"]))]
    data["names"] = list(names)
    data.setdefault("nc", len(names))
    if int(data["nc"]) != len(names):
        raise ValueError(f"{source}: nc={data['nc']} but {len(names)} names are given")
    data["nc"] = int(data["nc"])


def _missing_val(data):
    """The val paths that do not exist."""
    val = data["val"] if isinstance(data["val"], list) else [data["val"]]
    return [v for v in val if not Path(v).exists()]


def _run_download(data, s):
    """Run a dataset's download step: a .zip URL, a 'bash ...' command, or a python script."""
    if s.startswith("http") and s.endswith(".zip"):
        f = Path(data["path"]).parent / Path(s).name
        safe_download(f, s)
        LOGGER.info(f"Unzipping {f}...")
        unzip_file(f, f.parent)
        f.unlink()
    elif s.startswith("bash "):
        LOGGER.info(f"Running {s} ...")
        r = subprocess.run(s, shell=True, cwd=ROOT)
        if r.returncode:
            raise RuntimeError(f"dataset download command failed with exit code {r.returncode}: {s}")
    else:
        exec(s, {"yaml": data})


def check_dataset(data, autodownload=True):
    """Load and validate a dataset yaml/dict, resolving paths and downloading it when val is missing."""
    source = data if isinstance(data, (str, Path)) else "dataset dict"
    data = _load(data)
    for k in "train", "val":
        if not data.get(k):
            raise ValueError(f"{source}: '{k}' is required (a dir, a .txt list of images, or a list of these)")
    _check_names(data, source)
    _resolve(data)
    missing = _missing_val(data)
    if missing:
        LOGGER.info(f"Dataset not found, missing paths: {missing}")
        s = data.get("download")
        if not (s and autodownload):
            raise FileNotFoundError(f"{source}: dataset not found ({missing}) and no download step to run")
        _run_download(data, str(s).strip())
        missing = _missing_val(data)
        if missing:
            raise FileNotFoundError(f"{source}: download step ran but {missing} still does not exist")
        LOGGER.info(f"Dataset autodownload {colorstr('bold', 'green', 'success')}, saved to {data['path']}")
    return data
