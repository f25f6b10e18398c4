"""README.md and docs/: a short front door, every page linked from it, every named path present, no history."""

import fnmatch
import re
from functools import cache

import pytest

from conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
SETUP = (  # the Quick start's two set-up commands: train and detect on the bundled data; the fast test suite
    "pip install -r requirements.txt && python train.py --data shapes.yaml",
    'pip install -r requirements.txt && python -m pytest -m "not slow"',
)
HISTORY = ("withdrawn", "before this work", "commit 0", "re-checked", "earlier", "no gpu lent", "not yet measured")
OUTPUT_ROOTS = {"runs", "datasets"}  # folders the commands create
OUTPUT_FILES = {"hyp.yaml", "opt.yaml", "metadata.yaml", "study.md", "compare.md"}  # files the commands write
PENDING = {"docs/speed.md", "docs/heatmaps.md"}  # pages that other branches add, linked ahead of them
EXAMPLE = "MyBlock"  # the README's worked example of a new block: its files do not exist
PATH_EXT = (".py", ".yaml", ".md")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(path):
    return str(path.relative_to(ROOT))


@cache
def repo_names():
    """Names of the repository's files (bare file names), outputs and git internals left out."""
    skip = OUTPUT_ROOTS | {".git"}
    return {p.name for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)}


def _expand(token):
    """`a-{x,y}.yaml` -> [`a-x.yaml`, `a-y.yaml`] (one brace group, as bash)."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    return [token[: m.start()] + part + token[m.end() :] for part in m[1].split(",")] if m else [token]


def tokens(text):
    """Words of the code spans and code blocks of a page: where its commands and paths are."""
    blocks = FENCE.findall(text)
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    words = [w for chunk in blocks + spans for w in chunk.split()]
    words = [w.split("=", 1)[1] if w.startswith("--") and "=" in w else w for w in words]
    return [t for w in words for t in _expand(w.strip("'\"(),;:[]").rstrip("."))]


def looks_like_repo_path(token):
    if token.startswith("../"):
        return True
    if "<" in token or ">" in token or EXAMPLE in token or token.startswith(("http://", "https://")):
        return False
    if "/" in token:
        return token.split("/")[0] in {p.name for p in ROOT.iterdir()} - OUTPUT_ROOTS
    return token.endswith(PATH_EXT) and token not in OUTPUT_FILES


def exists(token):
    """A path relative to the repository root (globs must match), a file name the repository holds, or a model config
    the loader resolves (`yolov5s6_SE.yaml`, `yolov5n_C3SE.yaml`)."""
    if token.startswith("../"):
        return False
    if "/" in token:
        return any(ROOT.glob(token.rstrip("/"))) if "*" in token else (ROOT / token).exists()
    if token in repo_names() or "*" in token and fnmatch.filter(repo_names(), token):
        return True
    from models.config import load_model_yaml

    try:
        load_model_yaml(token)
        return True
    except Exception:
        return False


def slug(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M)}


def test_readme_is_a_short_front_door():
    text = README.read_text()
    assert README.stat().st_size <= 16_000, f"README.md is {README.stat().st_size} bytes; move details into docs/"
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert all(any(line.startswith(c) for line in quick.splitlines()) for c in SETUP), "a set-up command is missing"
    assert "../shared" not in text


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.split("#")[0] for target in LINK.findall(README.read_text())}
    assert len(DOCS) >= 4
    assert [_name(p) for p in DOCS if _name(p) not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_named_paths_exist(page):
    text = page.read_text()
    assert "../shared" not in text
    missing = sorted({t for t in tokens(text) if looks_like_repo_path(t) and not exists(t)})
    assert missing == [], f"{_name(page)} names paths the repository does not contain"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_links_resolve(page):
    bad = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if _name(dest) in PENDING:
            continue
        if not dest.exists() or (fragment and fragment not in anchors(dest)):
            bad.append(target)
    assert bad == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_development_history(page):
    text = page.read_text().lower()
    assert [p for p in HISTORY if p in text] == [], f"{_name(page)}: history belongs in CHANGELOG.md"


def test_path_check_catches_what_it_should():
    text = "`python val.py --data ../shared/data/raccoon.yaml` and\n```bash\npython x.py --cfg models/nope.yaml\n```\n"
    found = {t for t in tokens(text) if looks_like_repo_path(t) and not exists(t)}
    assert found == {"x.py", "../shared/data/raccoon.yaml", "models/nope.yaml"}
    ok = "`models/yolov5_*.yaml` `data/hyps/hyp.scratch-{low,med}.yaml` `yolov5s6_C3CBAM.yaml` `runs/x/y.pt` `x/lr0`"
    assert [t for t in tokens(ok) if looks_like_repo_path(t) and not exists(t)] == []
