"""Files written whole or not at all: a temp file beside the target, renamed over it; a failure is one line.

A full disk (or quota, or a file-size limit) makes the write raise; the temp file is removed, the target keeps its
previous contents, and the caller gets a `WriteError` naming the file and the reason.
"""

import errno
import os
import tempfile
from pathlib import Path

DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no space, quota exceeded, file-size limit


class WriteError(OSError):
    """A file could not be written; no partial file was left. str() is one line naming the file."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(e):
    """The OSError behind e: itself, or the one torch.save's 'unexpected pos' RuntimeError hides in its context."""
    return e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None


def _temp_file(path):
    """(open binary file, its name): a new temp file beside path (tests replace it to simulate a full disk)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return os.fdopen(fd, "wb"), tmp


def atomic_write(path, write):
    """Call write(f) on a temp file beside path, fsync, rename over path (mode 0666 less the umask, as open()).

    OSError (or a RuntimeError caused by one, as torch.save raises) becomes a WriteError; the temp file is removed.
    """
    path = Path(path)
    existed = path.exists()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f, tmp = _temp_file(path)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        cause = _reason(e)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if cause is None:
            raise
        kept = "its previous contents are kept" if existed else "no partial file was left"
        raise WriteError(f"cannot write {path}: {cause.strerror or cause} ({kept})") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def is_write_failure(e):
    """True for a WriteError or an OSError that only a write raises (no space, quota, file-size limit)."""
    return isinstance(e, WriteError) or (isinstance(e, OSError) and e.errno in DISK_FULL)


def save_figure(fig, path, **kwargs):
    """fig.savefig, written atomically; the format comes from the file suffix."""
    atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix[1:], **kwargs))
