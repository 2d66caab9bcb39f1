"""The step-through and heatmap views show exactly what the traces and the stepper hold."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from fake_rfsq import FakeRFSQ, observations
from matplotlib.colors import to_rgba

from rsdlib.actions import ACTION_NAMES
from rsdlib.decoding import (
    DecodeTrace,
    TraceStepper,
    acceptance_per_layer,
    decode_rfsq_ar,
    speculative_decode,
)
from rsdlib.decoding.spec import MethodSpec
from rsdlib.policies import RandomDrafter
from rsdlib.widgets import (
    VERDICT_COLOURS,
    AcceptanceHeatmap,
    StepThrough,
    acceptance_matrix,
    ee_path,
    plot_acceptance_heatmap,
    plot_layer_step,
    plot_refinement,
    step_rows,
)

L, N, V = 3, 2, 6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def obs(main):
    return main.prepare(observations(4))


def decode(main, obs, spec: MethodSpec | str):
    """What a notebook's decode callable does: the spec becomes a rule and a drafter."""
    settings = MethodSpec.parse(spec)
    rule = settings.make_rule(FakeRFSQ())
    drafter = RandomDrafter(num_layers=L, num_latents=N, codebook_size=V, seed=3)
    return speculative_decode(
        main,
        drafter,
        obs,
        rule=rule,
        gamma=settings.gamma,
        temperature=settings.temperature,
        tokenizer=FakeRFSQ(),
    ).with_layer_actions(FakeRFSQ())


@pytest.fixture(scope="module")
def traces(main, obs):
    return decode(main, obs.repeat(2), "rsd_random:g2:exact").traces


@pytest.fixture(scope="module")
def corrected(traces):
    """A trace with a corrected layer (the random drafter is wrong somewhere)."""
    return next(t for t in traces if any(s == "corrected" for row in t.sources for s in row))


ROW = re.compile(r'<tr data-verdict="(\w+)" style="([^"]*)">')


def shown_verdicts(html: str) -> list[tuple[str, str]]:
    return ROW.findall(html)


# -- the step-through widget ---------------------------------------------------------------------------


def test_step_through_follows_the_stepper(corrected):
    view = StepThrough(corrected, plot=False)
    reference = TraceStepper(corrected)
    assert view.stepper.position == view.slider.value == 0
    assert view.slider.max == L - 1 and view.prev_button.disabled

    def check(position):
        step = reference.goto(position)
        assert view.stepper.position == view.slider.value == position
        html = view.table.value
        assert f'data-layer="{step.layer}"' in html and f'data-kind="{step.kind}"' in html
        assert f"layer {step.layer} of {L}" in html
        verdicts = shown_verdicts(html)
        assert len(verdicts) == N
        if step.token_accepted is None:
            assert verdicts == [("none", "")] * N
        else:
            for ok, (verdict, style) in zip(step.token_accepted, verdicts, strict=True):
                want = "accepted" if ok else "rejected"
                assert verdict == want and style == f"background:{VERDICT_COLOURS[want]}"
        for n, r in enumerate(step_rows(corrected, step)):
            assert f'data-source="{r["source"]}"' in html
            if r["source"] == "corrected":
                assert f"<b>{step.tokens[n]}</b> (was {step.draft_tokens[n]})" in html

    check(0)
    for position in range(1, L):
        view.next_button.click()
        check(position)
    assert view.next_button.disabled
    view.next_button.click()  # at the end: stays
    check(L - 1)
    view.prev_button.click()
    check(L - 2)
    view.slider.value = 0
    check(0)
    view.prev_button.click()  # at the start: stays
    check(0)
    kinds = {TraceStepper(corrected).goto(p).kind for p in range(L)}
    assert "corrected" in kinds


def test_step_through_draws_the_refinement_and_redecodes_with_the_controls(main, obs, corrected):
    asked = []

    def redecode(settings):
        asked.append(settings)
        return decode(main, obs, settings).traces[0]

    view = StepThrough(corrected, decode=redecode, drafters=("random",))
    first = view.image.value
    assert first[:4] == b"\x89PNG"
    view.next_button.click()
    assert view.image.value[:4] == b"\x89PNG" and view.image.value != first
    assert view.spec == MethodSpec.parse("rsd_random:g2:exact")
    assert view.threshold.disabled  # exact takes no threshold

    view.rule.value, view.threshold.value, view.gamma.value = "match_rate", 0.5, 1
    assert not view.threshold.disabled and "tau" in view.threshold.description
    view.decode_button.click()
    assert asked[-1] == MethodSpec.parse("rsd_random:g1:match_rate:0.5")
    assert asked[-1].rule_params == {"tau": 0.5}
    assert view.stepper.trace.rule_label == "match_rate(tau=0.5) [lossy]" and view.stepper.trace.gamma == 1
    assert view.stepper.position == view.slider.value == 0 and view.error is None

    before = view.stepper.trace
    view.temperature.value = 1.0  # match_rate is greedy: the decode fails, and the view says why
    view.decode_button.click()
    assert view.stepper.trace is before
    assert "temperature" in view.error and "temperature" in view.status.value
    view.temperature.value = 0.0
    view.decode_button.click()
    assert view.error is None and view.status.value == ""


def test_the_controls_default_to_what_the_trace_records(main, obs):
    trace = DecodeTrace(
        method="rsd", num_layers=1, num_latents=1, tokens=[[0]], sources=[["plain"]], main_passes=1,
        rule="match_rate", rule_params={"tau": 0.5}, gamma=3, drafter="head", temperature=0.0,
    )  # fmt: skip
    assert trace.spec == MethodSpec.parse("rsd_head:g3:match_rate:0.5")
    # the notebook's own spec, with drafter names its decode callable knows: the button decodes
    spec = MethodSpec.parse("rsd_random:g2:exact")
    view = StepThrough(
        decode=lambda s: decode(main, obs, s).traces[0], spec=spec, drafters=("random",), plot=False
    )
    assert view.spec == spec and view.threshold.value == 0.5  # a rule without a threshold keeps the default
    busy = []
    view.decode = lambda s: (
        busy.append((view.decode_button.disabled, view.status.value)) or decode(main, obs, s).traces[0]
    )
    view.decode_button.click()
    assert view.error is None
    assert busy[0][0] and "decoding" in busy[0][1]  # the view says it is busy while decoding
    assert not view.decode_button.disabled and view.decode_button.description == "decode"
    assert "corrected" in view.table.value and "lossy rule" in view.table.value  # the colours' legend
    for rule, value in (("level_distance", 1), ("action_tolerance", 0.1), ("match_rate", 0.75)):
        view.rule.value, view.threshold.value = rule, value
        view.decode_button.click()
        assert view.error is None and view.stepper.trace.rule_params == view.spec.rule_params


def test_step_through_needs_a_trace_or_a_decoder(corrected):
    with pytest.raises(ValueError, match="decode"):
        StepThrough()
    with pytest.raises(TypeError, match="DecodeTrace"):
        StepThrough(decode=lambda s: "not a trace")


# -- static figures ------------------------------------------------------------------------------------


def test_layer_step_figure_has_the_table_the_dimensions_and_the_path(corrected):
    reference = TraceStepper(corrected)
    for position in range(L):
        step = reference.goto(position)
        fig = plot_layer_step(corrected, position)
        table_ax, *dim_axes, ax3d = fig.axes
        assert f"layer {step.layer} of {L} ({step.kind}" in table_ax.get_title()
        assert [ax.get_title() for ax in dim_axes] == list(ACTION_NAMES)
        assert ax3d.name == "3d" and len(ax3d.lines) == position + 1
        for d, ax in enumerate(dim_axes):
            assert len(ax.lines) == position + 1  # one chunk per committed layer so far
            np.testing.assert_allclose(ax.lines[-1].get_ydata(), np.asarray(step.action)[:, d])
        path = ee_path(np.asarray(step.action))
        np.testing.assert_allclose(ax3d.lines[-1].get_data_3d()[2], path[:, 2])
        cells = table_ax.tables[0].get_celld()
        for n in range(N):
            face = cells[(1, n)].get_facecolor()  # row 0 holds the column labels; row 1 the drafts
            if step.token_accepted is None:
                assert face == to_rgba("white")
            else:
                want = "accepted" if step.token_accepted[n] else "rejected"
                assert face == to_rgba(VERDICT_COLOURS[want])
    # A stepper's own position is the default.
    stepper = TraceStepper(corrected)
    stepper.goto(1)
    assert "layer 1 of" in plot_layer_step(stepper).axes[0].get_title()
    assert len(plot_refinement(stepper).axes) == 8
    with pytest.raises(IndexError):
        plot_layer_step(corrected, L)


def test_views_of_a_trace_without_actions(main, obs):
    trace = decode_rfsq_ar(main, obs).traces[0]  # no tokenizer: no decoded actions
    fig = plot_layer_step(trace, 0)
    assert not fig.axes[1].axison and "no decoded actions" in fig.texts[0].get_text()
    view = StepThrough(trace, plot=False)
    assert shown_verdicts(view.table.value) == [("none", "")] * N
    assert 'data-kind="plain"' in view.table.value


# -- the acceptance heatmap ----------------------------------------------------------------------------


def test_heatmap_values_equal_acceptance_per_layer(main, obs, traces):
    lossy = decode(main, obs.repeat(2), "rsd_random:g2:match_rate:0.5").traces
    plain = decode_rfsq_ar(main, obs).traces
    by_label = {"exact": traces, "match_rate tau=0.5": lossy, "rfsq_ar": plain}
    labels, matrix = acceptance_matrix(by_label)
    assert labels == ["exact", "match_rate tau=0.5 [lossy]", "rfsq_ar"]
    for row, group in zip(matrix, by_label.values(), strict=True):
        want = [np.nan if a is None else a for a in acceptance_per_layer(group)]
        np.testing.assert_array_equal(row, want)
    # layer 0 comes with the prefix pass (never drafted); RSD judges every later layer, plain none
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[0, 0]) and not np.isnan(matrix[0, 1:]).any()

    fig = plot_acceptance_heatmap(by_label)
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    np.testing.assert_array_equal(shown.filled(np.nan), matrix)
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"layer {li}" for li in range(L)]

    view = AcceptanceHeatmap(by_label, plot=False)
    np.testing.assert_array_equal(view.matrix, matrix)
    for row in matrix[:2]:
        assert all(f"{v:.2f}</td>" in view.table.value for v in row if not np.isnan(v))
    assert "[lossy]" in view.table.value
    with pytest.raises(ValueError, match="no traces"):
        acceptance_matrix({"exact": []})


def test_importing_the_widgets_module_does_not_import_ipywidgets():
    code = "import sys, rsdlib.widgets; assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
