"""A paper style for matplotlib and ``save_figure``, which writes byte-identical files.

Figures are drawn from saved results only. Saving the same figure twice gives the same
bytes: the PDF creation date and the PNG software tag are dropped, and SVG ids use a fixed
hash salt. One plotting function per figure lives next to the experiment that needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: rcParams for figures that go into a paper: embedded TrueType fonts, sizes for a column.
PAPER_STYLE: dict[str, object] = {
    "figure.figsize": (6.0, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "rsd-workbench",
    "image.interpolation": "nearest",
}

#: Per-format metadata that would otherwise change on every save.
_STABLE_METADATA = {
    "pdf": {"CreationDate": None, "ModDate": None},
    "png": {"Software": None},
    "svg": {"Date": None},
}


def use_paper_style() -> None:
    """Apply :data:`PAPER_STYLE` globally (call once at the top of a notebook)."""
    mpl.rcParams.update(PAPER_STYLE)


def paper_style():
    """A context manager applying :data:`PAPER_STYLE` to the figures made inside it."""
    return mpl.rc_context(PAPER_STYLE)


def save_figure(
    fig: Figure,
    path: str | Path,
    *,
    formats: Iterable[str] = ("pdf", "png"),
    close: bool = False,
) -> list[Path]:
    """Save ``fig`` as ``path.<fmt>`` for each format, with no volatile metadata.

    Args:
        fig: the figure.
        path: the destination without suffix (a suffix, if given, is replaced).
        formats: any of ``pdf``, ``png``, ``svg``.
        close: close the figure afterwards (frees memory in long notebooks).

    Returns:
        The paths written.
    """
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in _STABLE_METADATA:
            raise ValueError(f"unsupported figure format {fmt!r}; use one of {sorted(_STABLE_METADATA)}")
        out = stem.with_suffix(f".{fmt}")
        with mpl.rc_context({"svg.hashsalt": PAPER_STYLE["svg.hashsalt"]}):
            fig.savefig(out, format=fmt, metadata=_STABLE_METADATA[fmt])
        written.append(out)
    if close:
        plt.close(fig)
    return written
