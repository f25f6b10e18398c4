"""Matplotlib figures without pyplot: no global figure registry, so plots can be drawn in background threads,
and matplotlib is imported on the first plot, not with the scripts (it takes a few hundred ms)."""

from importlib.util import find_spec
from pathlib import Path

BUNDLED_FONT = "mpl-data/fonts/ttf/DejaVuSans.ttf"  # matplotlib's own copy of DejaVu Sans


def subplots(nrows=1, ncols=1, **figure_kwargs):
    """(figure, axes) as pyplot.subplots gives them, on a Figure no pyplot state holds (freed with its last use).
    figure.savefig renders with Agg, as pyplot's Agg backend does."""
    from matplotlib.figure import Figure

    fig = Figure(**figure_kwargs)
    return fig, fig.subplots(nrows, ncols)


def figure(**figure_kwargs):
    """A bare Figure (add axes with figure.add_subplot), outside pyplot's state like subplots()."""
    from matplotlib.figure import Figure

    return Figure(**figure_kwargs)


def dejavu_sans_path():
    """Path of DejaVu Sans: matplotlib's bundled file, found without importing matplotlib, else font_manager's pick."""
    spec = find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_FONT
        if path.is_file():
            return str(path)
    from matplotlib import font_manager

    return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
