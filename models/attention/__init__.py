"""Attention blocks, one file per family; each registers itself (models.registry), which imports every file here."""

from models.registry import entries


def __getattr__(name):
    """A zoo block by its yaml name or alias, read from the registry (`__all__`: every such name)."""
    if name == "__all__":
        return sorted(n for e in entries(attention=True) for n in (e.name, *e.aliases))
    entry = next((e for e in entries(attention=True) if name in (e.name, *e.aliases)), None)
    if entry is None:
        raise AttributeError(f"module 'models.attention' has no attribute '{name}'")
    return entry.cls
