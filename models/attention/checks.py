"""Argument checks shared by the attention blocks: every bad argument raises a ValueError naming the block."""


def check_keep_channels(block, c1, c2):
    """A channel-preserving block needs c2 == c1."""
    if c2 != c1:
        raise ValueError(f"{block} keeps channels: c2 must equal c1, got c1={c1}, c2={c2}")


def check_positive_int(block, name, value):
    """Reject anything but an int >= 1 (bools included)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{block}: {name} must be an int >= 1, got {value!r}")


def check_divisible(block, name, value, divisor, divisor_name):
    """Require value % divisor == 0, e.g. channels split into groups."""
    if value % divisor:
        raise ValueError(f"{block}: {name} ({value}) must be divisible by {divisor_name} ({divisor})")


def check_positive_number(block, name, value):
    """Reject anything but a finite number > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{block}: {name} must be a number > 0, got {value!r}")
