"""Paper figures are drawn from saved rows alone and come out byte-identical when redrawn."""

from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402

from rsdlib.experiments.paper import (  # noqa: E402
    _frontiers,
    plot_acceptance_by_rule,
    plot_iso_latency,
    plot_pipeline,
    plot_success_per_task_by_method,
    timing_setup,
    write_manifest,
)
from rsdlib.plotting import paper_style, save_figure  # noqa: E402
from rsdlib.results import git_sha  # noqa: E402

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


def test_iso_latency_has_a_panel_per_suite_that_was_both_evaluated_and_timed():
    blocks = [{**COMPARISON, "suite": s} for s in ("libero_spatial", "libero_object", "libero_goal")]
    comparison = {**COMPARISON, "suites": blocks}
    latency = {**LATENCY, "suites": [{**LATENCY, "suite": s} for s in ("libero_spatial", "libero_goal")]}
    fig = plot_iso_latency(comparison, latency)
    assert [ax.get_title() for ax in fig.axes] == [
        "libero_spatial (n = 10)",
        "libero_goal (n = 10)",
    ]  # object: untimed
    assert "lossy RSD frontier" not in [t.get_text() for t in fig.legends[0].get_texts()]
    # a frontier drawn in any panel is in the legend, not only the first panel's
    lossy = {"method": "rsd_head:g2:match_rate:0.5", "rate": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 10}
    blocks[2] = {**blocks[2], "rows": [*blocks[2]["rows"], lossy]}
    latency["suites"][1] = {
        **LATENCY,
        "suite": "libero_goal",
        "rows": [*LATENCY["rows"], {"method": lossy["method"], "latency_median_ms": 15.0}],
    }
    fig = plot_iso_latency({**comparison, "suites": blocks}, latency)
    assert "lossy RSD frontier" in [t.get_text() for t in fig.legends[0].get_texts()]
    # a latency run from before 07 timed several folders timed the comparison's first suite
    assert [ax.get_title() for ax in plot_iso_latency(comparison, LATENCY).axes] == [
        "libero_spatial (n = 10)"
    ]
    with pytest.raises(ValueError, match="timed"):
        plot_iso_latency(comparison, {**LATENCY, "suite": "libero_10"})


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
    # adaptive depth (a monitor stops early: not lossless, whatever the rule) traces its own
    # frontier from full-depth rfsq_ar, and stays off the RSD ones
    adaptive = [
        {"method": "rfsq_ar+fixed:2", "rate": 0.25},
        {"method": "rsd_head:g3:exact+entropy:0.5", "rate": 0.5},
    ]
    timing |= {
        "rfsq_ar+fixed:2": {"latency_median_ms": 12.0},
        "rsd_head:g3:exact+entropy:0.5": {"latency_median_ms": 10.0},
    }
    frontiers = {label: points for points, _, label in _frontiers(rows + adaptive, timing)}
    assert frontiers["adaptive depth"] == [(10.0, 50.0), (12.0, 25.0), (30.0, 60.0)]
    assert frontiers["lossless RSD frontier"] == [(25.0, 60.0), (30.0, 60.0)]
    assert (10.0, 50.0) not in frontiers["lossy RSD frontier"]
    fig = plot_iso_latency({**COMPARISON, "rows": COMPARISON["rows"] + [{**COMPARISON["rows"][0], "method": "rfsq_ar+fixed:2"}]},
                           {**LATENCY, "rows": LATENCY["rows"] + [{**LATENCY["rows"][0], "method": "rfsq_ar+fixed:2"}]})  # fmt: skip
    markers = {line.get_marker() for line in fig.axes[0].get_lines()}
    assert "^" in markers  # adaptive depth's own marker


def test_manifest_names_notebook_runs_hashes_commit_and_profile(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "07_latency.png").write_bytes(b"png")
    (figures / "02_tokenizers_table.md").write_text("| a |\n")
    first = write_manifest(figures, sources={"07_": ["/tmp/runs/latency/default"]}, profile="smoke")
    assert first["07_latency.png"]["notebook"] == "07_latency.ipynb"
    assert first["07_latency.png"]["results"] == ["default"]
    assert first["02_tokenizers_table.md"]["results"] == []
    assert first["07_latency.png"]["profile"] == "smoke"
    assert first["07_latency.png"]["commit"] == git_sha()  # the tree that made it (None outside git)
    text = (figures / "MANIFEST.json").read_text()
    write_manifest(figures, sources={"07_": ["/tmp/runs/latency/default"]}, profile="smoke")
    assert (figures / "MANIFEST.json").read_text() == text  # deterministic
    assert "MANIFEST.json" not in json.loads(text)
    assert list(json.loads(text)["07_latency.png"]) == ["commit", "notebook", "profile", "results", "sha256"]
    # a figure that was not redrawn keeps where it came from; a redrawn one records the new run
    (figures / "07_latency.png").write_bytes(b"png, redrawn")
    again = write_manifest(figures, sources={}, profile="default", commit="abc123")
    assert (again["07_latency.png"]["commit"], again["07_latency.png"]["profile"]) == ("abc123", "default")
    assert again["02_tokenizers_table.md"]["profile"] == "smoke"
    assert again["02_tokenizers_table.md"]["commit"] == first["02_tokenizers_table.md"]["commit"]


def _extent(artist, renderer):
    return artist.get_window_extent(renderer)


def _overlap(a, b, slack=0.5):
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


def _inside(a, b):
    return a.x0 >= b.x0 and a.x1 <= b.x1 and a.y0 >= b.y0 and a.y1 <= b.y1


def test_pipeline_labels_sit_clear_of_boxes_and_the_verify_bracket_spans_every_layer():
    for layers, latents, gamma in ((4, 4, 2), (5, 4, 1), (3, 6, 3), (8, 8, 3)):
        fig = plot_pipeline(num_layers=layers, num_latents=latents, gamma=gamma)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch | Rectangle)]
        texts = [t for t in ax.texts if t.get_text()]
        for text in texts:
            box = _extent(text, renderer)
            own = [p for p in boxes if p.get_gid() == text.get_gid() and text.get_gid() is not None]
            if own:  # a box's own text stays inside it
                assert _inside(box, _extent(own[0], renderer)), text.get_text()
            others = [p for p in boxes if p not in own]
            hit = [p.get_gid() for p in others if _overlap(box, _extent(p, renderer))]
            assert not hit, f"{text.get_text()!r} runs into {hit}"
            hit = [o.get_text() for o in texts if o is not text and _overlap(box, _extent(o, renderer))]
            assert not hit, f"{text.get_text()!r} runs into {hit}"
            assert _inside(box, fig.bbox), f"{text.get_text()!r} is cut off"
        cells = {j: [p for p in boxes if p.get_gid() == f"layer {j}"] for j in range(layers)}
        grid = [_extent(p, renderer) for column in cells.values() for p in column]
        others = [_extent(p, renderer) for p in boxes if not (p.get_gid() or "").startswith("layer")]
        assert not any(_overlap(g, o) for g in grid for o in others)
        bracket_y = max(next(line for line in ax.lines if line.get_gid() == "propose").get_ydata())
        assert all(p.get_y() + p.get_height() < bracket_y for column in cells.values() for p in column)
        span = {line.get_gid(): line.get_xdata() for line in ax.lines}
        for j, column in cells.items():
            x0 = column[0].get_x()
            x1 = x0 + column[0].get_width()
            assert min(span["verify"]) <= x0 and x1 <= max(span["verify"])  # verified or filled in
            drafted = min(span["propose"]) <= x0 and x1 <= max(span["propose"])
            assert drafted == (j < gamma)


COMPARISON_FAST = {**COMPARISON, "rows": [*COMPARISON["rows"],
                   {"method": "fast_ar", "rate": 0.3, "ci_low": 0.1, "ci_high": 0.6, "n": 10}]}  # fmt: skip
LATENCY_FAST = {"device": "CPU x86_64, 1 threads", "rows": [*LATENCY["rows"],
                {"method": "fast_ar", "latency_median_ms": 46.7, "floor_ms": 12.0}]}  # fmt: skip


def test_iso_latency_draws_fast_like_any_plain_method_on_a_log_axis_that_holds_every_point():
    fig = plot_iso_latency(COMPARISON_FAST, LATENCY_FAST)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert sorted(labels) == sorted(["rfsq_ar", "RSD g2:exact", "l1_regression", "fast_ar"])
    markers = {(float(x), float(y)) for line in ax.lines if line.get_marker() in ("o", "D")
               for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}  # fmt: skip
    assert (46.7, 30.0) in markers
    assert ax.get_xscale() == "log"  # a speedup is the same distance anywhere on the axis
    lo, hi = ax.get_xlim()
    assert lo < min(x for x, _ in markers) and lo < 12.0 and hi > 46.7  # every method, the floor
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"20", "50"} <= set(ticks) and all(float(t) for t in ticks)  # plain ms, no 10^x
    title = fig.get_suptitle()  # the device, once for every panel
    assert "CPU x86_64, 1 thread;" in title and "threads" not in title


def test_iso_latency_legend_names_only_what_is_drawn():
    rows = [
        {"method": "rfsq_ar", "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10},
        {"method": "rsd_head:g3:exact", "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10},
        {"method": "rsd_head:g3:match_rate:0.75", "rate": 0.6, "ci_low": 0.3, "ci_high": 0.85, "n": 10},
        {"method": "rsd_head:g3:match_rate:0.5", "rate": 0.7, "ci_low": 0.4, "ci_high": 0.9, "n": 10},
    ]
    timed = [{"method": m, "latency_median_ms": ms, "floor_ms": 15.0}
             for m, ms in zip([r["method"] for r in rows], [32.4, 33.9, 24.8, 23.8], strict=True)]  # fmt: skip
    cases = {
        "all": (rows, timed),
        "no floor": (rows, [{k: v for k, v in t.items() if k != "floor_ms"} for t in timed]),
        "one lossless point": ([rows[0], *rows[2:]], timed),
        "plain only": (rows[:1], timed),
    }
    for case, (comparison_rows, latency_rows) in cases.items():
        fig = plot_iso_latency({"suite": "libero_spatial", "rows": comparison_rows},
                               {"device": "CPU", "rows": latency_rows})  # fmt: skip
        ax = fig.axes[0]
        drawn = {}
        for line in ax.lines:
            points = {(float(x), float(y)) for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}
            if line.get_label().startswith("floor") or len(points) >= 2:
                drawn[line.get_label()] = line
        legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
        named = [t.get_text() for legend in legends for t in legend.get_texts()]
        assert named == [label for label in drawn if not label.startswith("_")], case
        if "lossless RSD frontier" in drawn and "lossy RSD frontier" in drawn:  # both visible where they meet
            lossless, lossy = drawn["lossless RSD frontier"], drawn["lossy RSD frontier"]
            assert lossless.get_color() != lossy.get_color()
            assert lossless.get_linewidth() > 2 * lossy.get_linewidth()
    assert {t.get_text() for t in plot_iso_latency(COMPARISON, LATENCY).legends[0].get_texts()} >= {
        "lossless RSD frontier"
    }


def test_acceptance_by_rule_is_a_heatmap_with_values_and_not_drafted_cells():
    rules = ("exact", "match_rate:0.75", "match_rate:0.5", "action_tolerance:0.05", "action_tolerance:0.2")
    rows = [
        {"method": f"rsd_{d}:g{g}:{rule}", "acceptance_per_layer": [0.9, 0.5 if g > 1 else None, None, 0.25]}
        for d in ("head", "tiny")
        for g in (1, 2, 3)
        for rule in rules
    ] + [{"method": "rfsq_ar", "acceptance_per_layer": None}]
    fig = plot_acceptance_by_rule(rows)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["drafter: head", "drafter: tiny"]
    for ax in panels:
        assert len(ax.get_yticklabels()) == 15
        assert ax.get_yticklabels()[0].get_text() == "g1 exact"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
        values = [t.get_text() for t in ax.texts]
        assert values.count("0.90") == 15 and values.count("0.50") == 10 and values.count("0.25") == 15
        hatched = [p for p in ax.patches if p.get_hatch()]
        assert len(hatched) == 15 + 5  # layer 2 everywhere, layer 1 at gamma 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["not drafted"]


def test_a_latency_caption_names_device_dtype_and_model_sizes_where_the_run_recorded_them():
    old = {"device": "CPU x86_64, 1 thread"}
    assert timing_setup(old) == "CPU x86_64, 1 thread"  # runs from before sizes were recorded
    new = old | {
        "models": {"dtype": "float32", "parameters": {"rfsq_ar": 1_834_000, "head_drafter": 560_000}}
    }
    assert (
        timing_setup(new)
        == "CPU x86_64, 1 thread, float32 weights; parameters: rfsq_ar 1.83M, head_drafter 0.56M"
    )
