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
