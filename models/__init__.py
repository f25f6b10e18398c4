"""Model package; importing any part of it registers the v6.1 and attention blocks (see models/registry.py)."""

from models import attention, common, experimental  # noqa: F401
