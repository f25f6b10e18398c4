"""Attention blocks, one file per family; each registers itself (models.registry) and is importable from here."""

from models.attention import channel, conv, global_context, soca, spatial  # noqa: F401  (registers the blocks)
from models.registry import entries


def __getattr__(name):
    """A zoo block by its yaml name or alias, read from the registry."""
    entry = next((e for e in entries(attention=True) if name in (e.name, *e.aliases)), None)
    if entry is None:
        raise AttributeError(f"module 'models.attention' has no attribute '{name}'")
    return entry.cls


__all__ = sorted(n for e in entries(attention=True) for n in (e.name, *e.aliases))
