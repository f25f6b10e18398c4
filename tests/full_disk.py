"""A simulated full disk for utils.atomic's temp files, shared by tests/test_disk_full.py and the train.py run it
starts in a subprocess."""

import errno
import io
import os

import utils.atomic


class FullDisk:
    """A temp file on a disk with `free` bytes left: a write beyond them stores what fits, then raises ENOSPC."""

    def __init__(self, f, free):
        self.f, self.free = f, free

    def write(self, b):
        n = min(len(b), self.free)
        self.f.write(bytes(b[:n]))
        self.free -= n
        if n < len(b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def fileno(self):
        """None to hand out: PIL and others that write through the descriptor fall back to write()."""
        raise io.UnsupportedOperation("a simulated full disk has no file descriptor")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk(free, target_name=None, after=0):
    """A replacement for utils.atomic._temp_file: temp files (of target_name only, when given) get a disk with
    `free` bytes left from the (after + 1)-th such file on."""
    real, seen = utils.atomic._temp_file, []

    def temp_file(path):
        f, tmp = real(path)
        if target_name is None or path.name == target_name:
            seen.append(path.name)
        return (FullDisk(f, free) if len(seen) > after else f), tmp

    return temp_file
