"""Figures outside the paper set: the tokenizer report (notebook 02) and the LIBERO threshold
sweep (notebook 08) read well: labels apart, enough ticks, no file paths, latency from zero."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rsdlib.libero.figures import plot_threshold_sweep  # noqa: E402
from rsdlib.results import describe_device, device_label  # noqa: E402
from rsdlib.tokenizers import report  # noqa: E402


def tokenizer_rows():
    """RFSQ k=1..5 and FAST scales as notebook 02 saves them; RFSQ k=1 and FAST scale=2 coincide."""
    rows = []
    rfsq = [5.5e-3, 2.2e-3, 1.1e-3, 8.4e-4, 7.7e-4]
    fast = [(2, 4.0, 5.7e-3), (5, 8.9, 1.7e-3), (10, 14, 5e-4), (20, 19, 1.4e-4), (50, 27, 2.5e-5)]
    for k, mse in enumerate(rfsq, 1):
        rows.append({"tokenizer": "rfsq", "setting": f"k={k}", "data": "held-out", "tokens_per_chunk": 4 * k,
                     "bits_per_chunk": 40 * k, "sequential_steps": k, "mse_normalised": mse, "mse_env": mse})  # fmt: skip
    for scale, tokens, mse in fast:
        rows.append({"tokenizer": "fast", "setting": f"scale={scale}", "data": "held-out",
                     "tokens_per_chunk": tokens, "bits_per_chunk": 10 * tokens, "sequential_steps": tokens,
                     "mse_normalised": mse, "mse_env": mse})  # fmt: skip
    return rows


def test_error_vs_budget_labels_do_not_overlap_and_the_log_axis_has_several_ticks():
    rows = tokenizer_rows()
    for x in ("tokens_per_chunk", "sequential_steps"):
        fig = report.plot_error_vs_budget(rows, x=x, datasets=["held-out"])
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        labels = [t for t in ax.texts if t.get_text()]
        assert sorted(t.get_text() for t in labels) == sorted(r["setting"] for r in rows)
        boxes = [t.get_window_extent(renderer) for t in labels]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                shared = max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
                assert shared < 1.0, (labels[i].get_text(), x)
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(shown) >= 3, shown  # 4..27 tokens: 5, 10, 20 at least
        assert all(t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi)
        plt.close(fig)


def test_source_names_in_titles_carry_no_file_path():
    source = "demos data/demos/libero_spatial (10 files, 200 episodes)"
    assert report.source_name(source) == "demos libero_spatial (10 files, 200 episodes)"
    synthetic = "SYNTHETIC expert-like episodes (60; not demonstrations)"
    assert report.source_name(synthetic) == synthetic
    assert (
        report.source_name("demos /abs/path/to/demos/ (1 files, 2 episodes)")
        == "demos demos (1 files, 2 episodes)"
    )


def test_threshold_sweep_latency_axis_starts_at_zero():
    rows = [
        {"method": m, "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10, "latency_median_ms": ms,
         "acceptance_per_layer": [0.5, 0.4, 0.3, 0.1]}
        for m, ms in (("rsd_head:g3:exact", 57.1), ("rsd_head:g3:match_rate:0.75", 52.0),
                      ("rsd_head:g3:match_rate:0.5", 50.0))
    ]  # fmt: skip
    fig = plot_threshold_sweep(rows, "match_rate")
    latency = fig.axes[1]
    assert "latency" in latency.get_ylabel()
    low, high = latency.get_ylim()
    assert low == 0 and high > 57.1
    plt.close(fig)


def test_one_thread_is_written_in_the_singular():
    assert device_label("CPU x86_64, 1 threads") == "CPU x86_64, 1 thread"
    assert device_label("CPU x86_64, 11 threads") == "CPU x86_64, 11 threads"
    assert device_label("NVIDIA H200") == "NVIDIA H200"
    import torch

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device("cpu").endswith(", 1 thread")
    finally:
        torch.set_num_threads(old)
