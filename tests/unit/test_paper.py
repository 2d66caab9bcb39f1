"""Paper figures are drawn from saved rows alone and come out byte-identical when redrawn."""

from __future__ import annotations

import json

from rsdlib.experiments.paper import (
    _frontiers,
    plot_acceptance_by_rule,
    plot_iso_latency,
    plot_pipeline,
    plot_success_per_task_by_method,
    write_manifest,
)
from rsdlib.plotting import paper_style, save_figure

COMPARISON = {
    "suite": "libero_spatial",
    "rows": [
        {"method": "rfsq_ar", "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10},
        {"method": "rsd_head:g2:exact", "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10},
        {"method": "l1_regression", "rate": 0.2, "ci_low": 0.05, "ci_high": 0.5, "n": 10},
    ],
}
LATENCY = {
    "device": "CPU",
    "rows": [
        {"method": "rfsq_ar", "latency_median_ms": 30.0, "floor_ms": 12.0},
        {"method": "rsd_head:g2:exact", "latency_median_ms": 21.0, "floor_ms": 12.0,
         "acceptance_per_layer": [0.9, 0.5, None, 0.7]},
        {"method": "l1_regression", "latency_median_ms": 11.0, "floor_ms": 12.0},
    ],
}  # fmt: skip


PER_TASK = {
    method: [{"suite": "libero_spatial", "task_id": t, "rate": r, "ci_low": r / 2, "ci_high": 1.0, "n": 2}
             for t, r in enumerate(rates)]
    for method, rates in {"rfsq_ar": [1.0, 0.5], "l1_regression": [0.5, 0.0]}.items()
}  # fmt: skip


def test_paper_figures_are_byte_identical_when_redrawn(tmp_path):
    draw = {
        "fig1": plot_pipeline,
        "fig3": lambda: plot_iso_latency(COMPARISON, LATENCY),
        "fig4": lambda: plot_acceptance_by_rule(LATENCY["rows"]),
        "per_task": lambda: plot_success_per_task_by_method(PER_TASK, "libero_spatial"),
    }
    for name, make in draw.items():
        with paper_style():
            first = save_figure(make(), tmp_path / "a" / name, close=True)
            second = save_figure(make(), tmp_path / "b" / name, close=True)
        for a, b in zip(first, second, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name
    fig3 = plot_iso_latency(COMPARISON, LATENCY)
    assert len(fig3.axes[0].texts) == 3  # every method with a latency gets a labelled marker


def test_frontiers_trace_plain_and_lossless_settings_and_the_lossy_thresholds():
    rows = [
        {"method": "rfsq_ar", "rate": 0.6},
        {"method": "rsd_head:g3:exact", "rate": 0.6},
        {"method": "rsd_head:g3:match_rate:0.75", "rate": 0.7},
        {"method": "rsd_head:g3:match_rate:0.5", "rate": 0.5},
        {"method": "l1_regression", "rate": 1.0},  # not RSD: on no frontier
    ]
    ms = {"rfsq_ar": 30, "rsd_head:g3:exact": 25, "rsd_head:g3:match_rate:0.75": 20,
          "rsd_head:g3:match_rate:0.5": 15, "l1_regression": 5}  # fmt: skip
    timing = {k: {"latency_median_ms": float(v)} for k, v in ms.items()}
    frontiers = {label: points for points, _, label in _frontiers(rows, timing)}
    assert frontiers["lossless RSD frontier"] == [(25.0, 60.0), (30.0, 60.0)]
    assert frontiers["lossy RSD frontier"] == [(15.0, 50.0), (20.0, 70.0), (25.0, 60.0)]
    # lossless settings alone draw no lossy frontier
    assert {label for _, _, label in _frontiers(rows[:2], timing)} == {"lossless RSD frontier"}


def test_manifest_names_notebook_runs_and_hashes(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "07_latency.png").write_bytes(b"png")
    (figures / "02_tokenizers_table.md").write_text("| a |\n")
    first = write_manifest(figures, sources={"07_": ["/tmp/runs/latency/default"]})
    assert first["07_latency.png"]["notebook"] == "07_latency.ipynb"
    assert first["07_latency.png"]["results"] == ["default"]
    assert first["02_tokenizers_table.md"]["results"] == []
    text = (figures / "MANIFEST.json").read_text()
    write_manifest(figures, sources={"07_": ["/tmp/runs/latency/default"]})
    assert (figures / "MANIFEST.json").read_text() == text  # deterministic
    assert "MANIFEST.json" not in json.loads(text)
