"""A paper style for matplotlib and ``save_figure``, which writes byte-identical files.

Figures are drawn from saved results only. Saving the same figure twice gives the same
bytes: the PDF creation date and the PNG software tag are dropped, and SVG ids use a fixed
hash salt. One plotting function per figure lives next to the experiment that needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

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


#: Where :func:`place_labels` tries a label, nearest first: (dx, dy) in points from the marker,
#: and the label's alignment there. The far ones get a thin leader line to their marker.
LABEL_OFFSETS: tuple[tuple[float, float, str, str], ...] = (
    (4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
    (-4, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
    (7, 0, "left", "center"), (-7, 0, "right", "center"),
    (10, 11, "left", "bottom"), (10, -11, "left", "top"), (-10, 11, "right", "bottom"),
    (-10, -11, "right", "top"), (0, 16, "center", "bottom"), (0, -16, "center", "top"),
    (14, 20, "left", "bottom"), (14, -20, "left", "top"), (-14, 20, "right", "bottom"),
    (-14, -20, "right", "top"),
)  # fmt: skip


def place_labels(
    ax: Axes,
    points: Sequence[tuple[float, float]],
    texts: Sequence[str],
    *,
    fontsize: float = 6,
    marker_pt: float = 3.5,
    offsets: Sequence[tuple[float, float, str, str]] = LABEL_OFFSETS,
    avoid: Sequence[Artist] = (),
    **text_kwargs: object,
) -> list[Annotation]:
    """Label each data point with its text where the label covers no other label and no marker.

    Each label goes at the first of ``offsets`` (nearest first) where it overlaps no label placed
    before, no marker (a box of ``marker_pt`` points around every point), no legend and none of
    the artists in ``avoid`` (a reference line, say), and stays inside the axes; where none is
    free, at the offset with the least overlap (outside the axes counts ten times). Call it after
    everything else is drawn and the limits are set: it draws the figure once to measure text.
    Labels take no part in the layout, so placing them does not move the axes under them.
    Deterministic: the same figure gives the same placement.

    Returns:
        The annotations, in the order of ``points``.
    """
    if not points:
        return []
    fig = ax.figure
    fig.canvas.draw()  # final limits and layout, and a renderer to measure text with
    renderer = fig.canvas.get_renderer()
    scale = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    half = marker_pt * scale
    markers = [
        Bbox.from_extents(x - half, y - half, x + half, y + half)
        for x, y in ax.transData.transform(list(points))
    ]
    # a thin line's box has no area: pad it so that crossing it counts
    taken: list[Bbox] = [a.get_window_extent(renderer).padded(1.5 * scale) for a in avoid]
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    placed = []
    for j, ((x, y), text) in enumerate(zip(points, texts, strict=True)):
        others = taken + markers[:j] + markers[j + 1 :]
        best = None
        for dx, dy, ha, va in offsets:
            far = abs(dx) > 8 or abs(dy) > 8
            label = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4", "shrinkA": 0, "shrinkB": 2} if far else None,
                **text_kwargs,
            )  # fmt: skip
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            cost = sum(_overlap(box, other) for other in others)
            cost += 10 * (box.width * box.height - _overlap(box, frame))  # outside the axes: worst
            if best is None or cost < best[0] - 1e-9:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost <= 0:
                break
        assert best is not None
        taken.append(best[2])
        placed.append(best[1])
    return placed


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (display units squared)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(0.0, w) * max(0.0, h)
