import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsdlib.plotting import paper_style, save_figure  # noqa: E402


def make_figure(offset=0.0):
    with paper_style():
        fig, ax = plt.subplots()
        x = np.linspace(0, 1, 50)
        ax.plot(x, np.sin(6 * x) + offset, label="sin")
        ax.legend()
        ax.set_title("a figure")
    return fig


@pytest.mark.parametrize("fmt", ["pdf", "png", "svg"])
def test_saving_the_same_figure_twice_gives_the_same_bytes(tmp_path, fmt):
    (a,) = save_figure(make_figure(), tmp_path / "a" / "fig", formats=[fmt], close=True)
    (b,) = save_figure(make_figure(), tmp_path / "b" / "fig", formats=[fmt], close=True)
    assert a.read_bytes() == b.read_bytes()


def test_a_changed_figure_gives_different_bytes(tmp_path):
    (a,) = save_figure(make_figure(0.0), tmp_path / "a", formats=["pdf"], close=True)
    (b,) = save_figure(make_figure(0.1), tmp_path / "b", formats=["pdf"], close=True)
    assert a.read_bytes() != b.read_bytes()


def test_pdf_has_no_creation_date_and_default_formats(tmp_path):
    paths = save_figure(make_figure(), tmp_path / "fig.png", close=True)
    assert [p.name for p in paths] == ["fig.pdf", "fig.png"]
    assert b"CreationDate" not in paths[0].read_bytes()


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unsupported figure format"):
        save_figure(make_figure(), tmp_path / "fig", formats=["bmp"], close=True)


def test_placed_labels_cover_no_other_label_and_stay_inside_the_axes():
    from rsdlib.plotting import place_labels

    with paper_style():
        fig, ax = plt.subplots(figsize=(4, 3))
        # a cluster of near-identical points, and one alone
        points = [(1.0, 1.0), (1.05, 1.0), (1.0, 1.03), (1.1, 0.98), (3.0, 2.0)]
        ax.plot(*zip(*points, strict=True), "o")
        ax.set(xlim=(0, 4), ylim=(0, 3))
        labels = place_labels(ax, points, [f"setting number {i}" for i in range(len(points))])
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [label.get_window_extent(renderer) for label in labels]
        frame = ax.get_window_extent(renderer)
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            for b in boxes[i + 1 :]:
                shared = max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
                assert shared < 1.0  # pixels
        assert [label.xy for label in labels] == points  # each label points at its own marker
        plt.close(fig)
