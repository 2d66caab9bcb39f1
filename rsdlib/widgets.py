"""Views of computed decoding traces: step-through widgets for notebooks and the same views as figures.

Everything here only displays what a :class:`~rsdlib.decoding.DecodeTrace` holds, through the
plain :class:`~rsdlib.decoding.TraceStepper` (which tests drive without widgets). Re-decoding with
other settings is the caller's ``decode(spec) -> DecodeTrace`` callable (a
:class:`~rsdlib.decoding.spec.MethodSpec` in, a trace out); no model code lives here.

- :class:`StepThrough`: prev/next buttons and a slider over the committed layers; per layer the
  drafted tokens with q(x) and p(x), the main model's top choices, accepted (green) or rejected
  (red) tokens, corrections, and the chunk refining layer by layer (7 dims over H steps, and the
  end-effector path in 3-D); controls for drafter, rule, threshold, gamma and temperature.
- :class:`AcceptanceHeatmap`: acceptance per RFSQ layer for several rules or thresholds.
- :func:`plot_layer_step`, :func:`plot_refinement`, :func:`plot_acceptance_heatmap`: the same
  views as static matplotlib figures (papermill runs save them with ``rsdlib.plotting.save_figure``).

ipywidgets is imported only when a widget is built, so ``import rsdlib`` stays light.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rsdlib.actions import ACTION_NAMES
from rsdlib.decoding.acceptance import RULE_NAMES, RULES
from rsdlib.decoding.spec import MethodSpec
from rsdlib.decoding.stepper import LayerStep, TraceStepper
from rsdlib.decoding.trace import DecodeTrace, acceptance_per_layer

#: Background of a drafted token by verdict.
VERDICT_COLOURS = {"accepted": "#c8e6c9", "rejected": "#ffcdd2"}
#: Units of each action dimension as the refinement plots draw them (the normalised OSC_POSE
#: deltas the controller takes, and the gripper command).
ACTION_UNITS = {name: "delta (action units)" for name in ACTION_NAMES} | {"gripper": "-1 open, +1 close"}
#: Where a committed token came from (text colour in the tables).
SOURCE_COLOURS = {"accepted": "#2e7d32", "corrected": "#c62828", "bonus": "#1565c0", "plain": "#616161"}


def step_rows(trace: DecodeTrace, step: LayerStep) -> list[dict[str, Any]]:
    """One row per latent of the layer ``step`` committed: what the token tables show.

    Returns:
        Dicts with ``latent``, ``draft`` (token or None), ``q`` (q(x)), ``p`` (p(x), the main
        probability of the drafted token), ``verdict`` (``accepted``, ``rejected`` or None when
        nothing was drafted), ``top`` ([(token, p), ...] the main model's top choices), ``token``
        (committed) and ``source`` (``accepted``, ``corrected``, ``bonus``, ``plain``).
    """
    p_x = None
    if step.round is not None and step.draft_tokens is not None:
        r = trace.rounds[step.round]
        p_x = r.main_probs[step.layer - r.start_layer]
    rows = []
    for n, token in enumerate(step.tokens):
        verdict = None
        if step.token_accepted is not None:
            verdict = "accepted" if step.token_accepted[n] else "rejected"
        top = []
        if step.main_top_tokens is not None:
            top = list(zip(step.main_top_tokens[n], step.main_top_probs[n], strict=True))
        rows.append(
            {
                "latent": n,
                "draft": None if step.draft_tokens is None else step.draft_tokens[n],
                "q": None if step.draft_probs is None else step.draft_probs[n],
                "p": None if p_x is None else p_x[n],
                "verdict": verdict,
                "top": top,
                "token": token,
                "source": trace.sources[step.layer][n],
            }
        )
    return rows


def refinement(steps: Sequence[LayerStep], position: int) -> np.ndarray | None:
    """``(k, H, A)`` the chunks decoded after each of the first ``k = position + 1`` committed layers.

    None when the trace holds no decoded actions (it was decoded without a tokenizer).
    """
    chunks = [s.action for s in steps[: position + 1]]
    if not chunks or any(c is None for c in chunks):
        return None
    return np.asarray(chunks, dtype=np.float64)


def ee_path(chunk: np.ndarray) -> np.ndarray:
    """``(H + 1, 3)`` the end-effector path a chunk's xyz deltas trace from the origin (cumulative sum)."""
    deltas = np.asarray(chunk, dtype=np.float64)[:, :3]
    return np.concatenate([np.zeros((1, 3)), np.cumsum(deltas, axis=0)])


def acceptance_matrix(traces_by_label: Mapping[str, Sequence[DecodeTrace]]) -> tuple[list[str], np.ndarray]:
    """Rows of :func:`~rsdlib.decoding.acceptance_per_layer`, one per label.

    Labels of lossy traces get `` [lossy]`` unless they say so already. Layers never judged
    (and layers past a row's L) are NaN.

    Returns:
        (row labels, ``(rows, L)`` matrix).

    Raises:
        ValueError: no labels, or a label with no traces.
    """
    if not traces_by_label:
        raise ValueError("acceptance_matrix got no labels")
    rows, labels = [], []
    for label, traces in traces_by_label.items():
        if not traces:
            raise ValueError(f"label {label!r} has no traces")
        lossy = any(not t.lossless for t in traces)
        labels.append(f"{label} [lossy]" if lossy and "lossy" not in label else str(label))
        rows.append([np.nan if a is None else a for a in acceptance_per_layer(list(traces))])
    width = max(len(r) for r in rows)
    return labels, np.array([r + [np.nan] * (width - len(r)) for r in rows], dtype=np.float64)


# -- static figures --------------------------------------------------------------------------------------


def _layer_colour(layer: int, num_layers: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    return colormaps["Blues"](0.45 + 0.55 * layer / max(num_layers - 1, 1))  # coarse light, fine dark


def _draw_refinement(
    fig: Figure, dim_axes: list, ax3d: Any, steps: Sequence[LayerStep], position: int
) -> None:
    """Each dimension over the chunk after every committed layer so far (earlier ones faded), and the path."""
    chunks = refinement(steps, position)
    if chunks is None:
        for ax in [*dim_axes, ax3d]:
            ax.set_axis_off()
        fig.text(0.5, 0.3, "no decoded actions in this trace (decode with a tokenizer)", ha="center")
        return
    k, H, A = chunks.shape
    L = len(steps)
    for i, chunk in enumerate(chunks):
        current = i == k - 1
        style = {
            "color": _layer_colour(steps[i].layer, L),
            "alpha": 1.0 if current else 0.35 + 0.45 * (i + 1) / k,
            "lw": 2.0 if current else 1.0,
            "label": f"layers 0..{steps[i].layer}",
        }
        for d, ax in enumerate(dim_axes[:A]):
            ax.plot(np.arange(H), chunk[:, d], **style)
        path = ee_path(chunk)
        ax3d.plot(path[:, 0], path[:, 1], path[:, 2], **style)
    for d, ax in enumerate(dim_axes):
        ax.set_title(ACTION_NAMES[d] if d < len(ACTION_NAMES) else f"dim {d}")
        ax.set_xlabel("chunk step")
        ax.set_ylabel(ACTION_UNITS.get(ACTION_NAMES[d], "") if d < len(ACTION_NAMES) else "", fontsize=7)
    dim_axes[0].legend(loc="best", fontsize=6)
    ax3d.scatter([0], [0], [0], color="k", s=12)
    ax3d.set_title("end-effector path\n(cumulative xyz deltas)", fontsize=9)
    ax3d.set_xlabel("x (action units)")
    ax3d.set_ylabel("y (action units)")
    ax3d.set_zlabel("z (action units)")


def _refinement_axes(fig: Figure, grid: Any, row0: int) -> tuple[list, Any]:
    """Seven dimension axes and one 3-D axes on two rows of four cells starting at ``row0``."""
    dim_axes = [fig.add_subplot(grid[row0 + d // 4, d % 4]) for d in range(7)]
    ax3d = fig.add_subplot(grid[row0 + 1, 3], projection="3d")
    return dim_axes, ax3d


def _stepper_at(trace: DecodeTrace | TraceStepper, position: int | None) -> TraceStepper:
    """A new stepper at ``position`` (default: a given stepper's position, else the last layer)."""
    stepper = TraceStepper(trace.trace if isinstance(trace, TraceStepper) else trace)
    if position is None:
        given = trace.position if isinstance(trace, TraceStepper) else -1
        position = given if given >= 0 else len(stepper) - 1
    if not 0 <= position < len(stepper):
        raise IndexError(f"position {position} is outside 0..{len(stepper) - 1} (committed layers)")
    stepper.goto(position)
    return stepper


def plot_refinement(trace: DecodeTrace | TraceStepper, position: int | None = None) -> Figure:
    """The chunk refining as layers are committed, up to ``position`` (default: the stepper's, or the last).

    Returns:
        A figure with seven axes (one per action dimension, over the H steps) and a 3-D axes.
    """
    stepper = _stepper_at(trace, position)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    dim_axes, ax3d = _refinement_axes(fig, fig.add_gridspec(2, 4), 0)
    _draw_refinement(fig, dim_axes, ax3d, stepper.steps, stepper.position)
    return fig


def _step_title(stepper: TraceStepper) -> str:
    trace, step = stepper.trace, stepper.current
    if step.layer < trace.prefix_layers:
        where = "in the prefix pass"
    else:
        where = "plain" if step.round is None else f"round {step.round}"
    text = (
        f"layer {step.layer} of {trace.num_layers} ({step.kind}, {where}); "
        f"main passes so far {stepper.main_passes_so_far()} of {trace.main_passes}"
    )
    if trace.method == "rsd":
        text += f"\n{trace.rule_label}, gamma={trace.gamma}, drafter={trace.drafter}, T={trace.temperature:g}"
    if trace.monitor is not None:
        text += "\n" + depth_note(trace)
    return text


def depth_note(trace: DecodeTrace) -> str:
    """Where a depth monitor stopped and why: its value after each layer against its threshold."""
    shown = ", ".join(
        f"after layer {k + 1}: {'no history (go on)' if v is None else format(v, '.3g')}"
        for k, v in enumerate(trace.monitor_values)
    )
    verdict = (
        "went to full depth" if trace.layers_used == trace.num_layers else f"stopped at {trace.layers_used}"
    )
    return (
        f"depth monitor {trace.monitor} (goes on while above {trace.depth_threshold:g}) {verdict} of "
        f"{trace.num_layers} layers; {shown}"
    )


def plot_layer_step(trace: DecodeTrace | TraceStepper, position: int | None = None) -> Figure:
    """One committed layer as a figure: its token table above the chunk refining up to it.

    The table has one column per latent: the drafted token (green: accepted, red: rejected),
    q(x), p(x), the main model's top choices and the committed token (coloured by its source).

    Args:
        trace: a trace, or a stepper (its position is the default).
        position: which committed layer (0-based, in decoding order); default: the stepper's
            position, or the last layer.

    Returns:
        A figure with a table axes (titled with the layer), seven dimension axes and a 3-D axes.
    """
    stepper = _stepper_at(trace, position)
    rows = step_rows(stepper.trace, stepper.current)
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    grid = fig.add_gridspec(3, 4, height_ratios=[1.1, 1, 1])
    table_ax = fig.add_subplot(grid[0, :])
    table_ax.set_axis_off()
    table_ax.set_title(_step_title(stepper), fontsize=9)

    top_k = max((len(r["top"]) for r in rows), default=0)
    labels = ["draft x", "q(x)", "p(x)", *[f"main top-{i + 1}" for i in range(top_k)], "committed"]
    cells, colours = [], []
    for r in rows:
        column = [
            "-" if r["draft"] is None else str(r["draft"]),
            "-" if r["q"] is None else f"{r['q']:.3f}",
            "-" if r["p"] is None else f"{r['p']:.3f}",
            *[f"{tok} ({p:.3f})" for tok, p in r["top"]],
            *["-"] * (top_k - len(r["top"])),
            f"{r['token']} [{r['source']}]",
        ]
        verdict = VERDICT_COLOURS.get(r["verdict"], "white")
        colour = [verdict, "white", "white", *["white"] * top_k, SOURCE_COLOURS[r["source"]] + "33"]
        cells.append(column)
        colours.append(colour)
    table = table_ax.table(
        cellText=np.array(cells, dtype=object).T.tolist(),
        cellColours=np.array(colours, dtype=object).T.tolist(),
        rowLabels=labels,
        colLabels=[f"latent {r['latent']}" for r in rows],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    dim_axes, ax3d = _refinement_axes(fig, grid, 1)
    _draw_refinement(fig, dim_axes, ax3d, stepper.steps, stepper.position)
    return fig


def plot_acceptance_heatmap(
    traces_by_label: Mapping[str, Sequence[DecodeTrace]], *, title: str | None = None
) -> Figure:
    """Acceptance per RFSQ layer (columns) for each rule or threshold (rows), values written in.

    Args:
        traces_by_label: ``{label: traces}``, e.g. ``{"exact": [...], "match_rate tau=0.5": [...]}``.
        title: the axes title (default: what is shown).

    Returns:
        A figure with the heatmap axes (its image holds :func:`acceptance_matrix`) and a colour bar.
    """
    labels, matrix = acceptance_matrix(traces_by_label)
    R, L = matrix.shape
    fig = Figure(figsize=(max(5.0, 2.0 + 0.9 * L), 1.2 + 0.45 * R), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(L), [f"layer {li}" for li in range(L)])
    ax.set_yticks(range(R), labels)
    ax.grid(False)
    # layers every row's prefix pass decoded were never drafted: say so rather than "n/a"
    free = min((t.prefix_layers for traces in traces_by_label.values() for t in traces), default=0)
    for i in range(R):
        for j in range(L):
            missing = "prefix" if j < free else "n/a"
            text = missing if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_title(title or "acceptance per RFSQ layer (accepted / drafted)")
    fig.colorbar(image, ax=ax, label="acceptance")
    return fig


def figure_png(fig: Figure, *, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (what the widgets show)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- HTML for the widgets --------------------------------------------------------------------------------


_TABLE_CSS = (
    "<style>.rsd-table{border-collapse:collapse;font-family:monospace}"
    ".rsd-table td,.rsd-table th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:center}</style>"
)


def _fmt(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.3f}"


def step_html(stepper: TraceStepper) -> str:
    """The stepper's current layer as an HTML table (rows carry ``data-verdict``, cells ``data-source``)."""
    step = stepper.current
    if step is None:
        return "<div>nothing committed yet</div>"
    rows = step_rows(stepper.trace, step)
    title = html.escape(_step_title(stepper)).replace("\n", "<br>")
    kind_colour = SOURCE_COLOURS.get(step.kind, "#000")
    head = (
        "<tr><th>latent</th><th>draft x</th><th>q(x)</th><th>p(x)</th><th>verdict</th>"
        "<th>main top choices (p)</th><th>committed</th></tr>"
    )
    body = []
    for r in rows:
        verdict = r["verdict"]
        style = f"background:{VERDICT_COLOURS[verdict]}" if verdict else ""
        mark = {"accepted": "&#10003; accepted", "rejected": "&#10007; rejected"}.get(verdict, "&ndash;")
        top = ", ".join(f"{tok} ({p:.3f})" for tok, p in r["top"]) or "&ndash;"
        corrected = r["source"] == "corrected"
        token = f"<b>{r['token']}</b>" + (f" (was {r['draft']})" if corrected else "")
        body.append(
            f'<tr data-verdict="{verdict or "none"}" style="{style}">'
            f"<td>{r['latent']}</td><td>{'&ndash;' if r['draft'] is None else r['draft']}</td>"
            f"<td>{_fmt(r['q'])}</td><td>{_fmt(r['p'])}</td>"
            f'<td data-verdict="{verdict or "none"}">{mark}</td><td>{top}</td>'
            f'<td data-source="{r["source"]}" style="color:{SOURCE_COLOURS[r["source"]]}">{token}</td></tr>'
        )
    return (
        f'{_TABLE_CSS}<div data-layer="{step.layer}" data-kind="{step.kind}">'
        f'<div style="color:{kind_colour}">{title}</div>'
        f'<table class="rsd-table">{head}{"".join(body)}</table>{legend_html()}</div>'
    )


def legend_html() -> str:
    """What the colours of :func:`step_html` mean, in one line under the table."""
    verdicts = " ".join(
        f'<span style="background:{c};padding:0 4px">{v}</span>' for v, c in VERDICT_COLOURS.items()
    )
    sources = " ".join(f'<span style="color:{c}"><b>{s}</b></span>' for s, c in SOURCE_COLOURS.items())
    return (
        f'<div class="rsd-legend" style="font-size:11px;margin-top:4px">row: drafted token {verdicts} '
        f"against the main argmax (or by rejection sampling); committed token: {sources}. "
        "A lossy rule (match_rate, level_distance, action_tolerance) can accept a layer with rejected "
        "tokens: they are committed as drafted (<b>accepted</b>) on a red row.</div>"
    )


def heatmap_html(labels: Sequence[str], matrix: np.ndarray, summaries: Sequence[Mapping[str, Any]]) -> str:
    """The acceptance matrix as an HTML table, cells shaded like the figure, with per-row summaries."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["RdYlGn"]
    L = matrix.shape[1]
    head = "".join(f"<th>layer {li}</th>" for li in range(L))
    head = f"<tr><th>rule</th>{head}<th>accepted layers / chunk</th><th>main passes / chunk</th><th>chunks</th></tr>"
    body = []
    for label, row, s in zip(labels, matrix, summaries, strict=True):
        cells = "".join(
            "<td>n/a</td>" if np.isnan(v) else f'<td style="background:{to_hex(cmap(v))}">{v:.2f}</td>'
            for v in row
        )
        body.append(
            f"<tr><td>{html.escape(label)}</td>{cells}<td>{s['accepted']:.2f}</td>"
            f"<td>{s['passes']:.2f}</td><td>{s['chunks']}</td></tr>"
        )
    return f'{_TABLE_CSS}<table class="rsd-table">{head}{"".join(body)}</table>'


# -- widgets ---------------------------------------------------------------------------------------------


class StepThrough:
    """Step through one computed trace layer by layer; re-decode with other settings.

    Args:
        trace: the trace to show (None: call ``decode(spec)`` for it).
        decode: ``decode(MethodSpec) -> DecodeTrace``, called by the decode button (None: no controls).
        spec: the controls' initial values (default: what ``trace`` records).
        drafters: drafter names offered (``decode`` must understand them).
        threshold: the threshold box's value while the rule takes none (default: the spec's).
        plot: draw the refinement figure on every step (off: tables only, faster).

    Attributes:
        stepper: the :class:`~rsdlib.decoding.TraceStepper` behind the view.
        prev_button, next_button, slider: navigation (the slider's value is the stepper's position).
        table: HTML of the current layer (:func:`step_html`).
        image: PNG of :func:`plot_refinement` at the current layer.
        status: the last decode's error, if any (a callback's exception is otherwise invisible).
        widget: the whole view.
    """

    def __init__(
        self,
        trace: DecodeTrace | None = None,
        *,
        decode: Callable[[MethodSpec], DecodeTrace] | None = None,
        spec: MethodSpec | str | None = None,
        drafters: Sequence[str] = ("head", "tiny"),
        threshold: float = 0.5,
        plot: bool = True,
    ) -> None:
        import ipywidgets as w

        if trace is None and decode is None:
            raise ValueError("StepThrough needs a trace, or a decode(spec) callable to make one")
        if spec is None:  # what the trace records; a plain trace starts the controls at exact RSD
            rsd_trace = trace is not None and trace.method == "rsd"
            spec = trace.spec if rsd_trace else MethodSpec("rsd", drafters[0], 2, "exact")
        spec = MethodSpec.parse(spec)
        if not spec.is_rsd:
            raise ValueError(f"the controls set RSD settings; {spec} is plain decoding")
        self.decode, self.plot = decode, plot
        self.error: str | None = None
        self.prev_button = w.Button(description="prev", icon="arrow-left", layout=w.Layout(width="80px"))
        self.next_button = w.Button(description="next", icon="arrow-right", layout=w.Layout(width="80px"))
        self.slider = w.IntSlider(value=0, min=0, max=0, description="layer", continuous_update=False)
        self.table = w.HTML()
        self.image = w.Image(format="png")
        self.status = w.HTML()
        self.prev_button.on_click(lambda _: self.goto(self.slider.value - 1))
        self.next_button.on_click(lambda _: self.goto(self.slider.value + 1))
        self.slider.observe(lambda change: self._show(change["new"]), names="value")

        drafter_options = list(dict.fromkeys([*drafters, spec.drafter]))
        wide = {"style": {"description_width": "initial"}}  # labels in full, not "temperat..."
        self.drafter = w.Dropdown(options=drafter_options, value=spec.drafter, description="drafter", **wide)
        self.rule = w.Dropdown(options=list(RULE_NAMES), value=spec.rule, description="rule", **wide)
        self.threshold = w.FloatText(
            value=threshold if spec.param is None else spec.param, description="threshold", step=0.05, **wide
        )
        self.gamma = w.IntSlider(value=spec.gamma, min=1, max=max(8, spec.gamma), description="gamma", **wide)
        self.temperature = w.FloatSlider(
            value=spec.temperature, min=0.0, max=2.0, step=0.1, description="temperature", **wide
        )
        self.rule.observe(lambda _: self._sync_threshold(), names="value")
        self._sync_threshold()
        self.decode_button = w.Button(description="decode", button_style="primary")
        self.decode_button.on_click(lambda _: self.redecode())
        controls = w.VBox(
            [
                w.HBox([self.drafter, self.rule, self.threshold]),
                w.HBox([self.gamma, self.temperature, self.decode_button]),
                self.status,
            ]
        )
        navigation = w.HBox([self.prev_button, self.slider, self.next_button])
        parts = ([controls] if decode is not None else []) + [navigation, self.table, self.image]
        self.widget = w.VBox(parts)
        self.set_trace(trace if trace is not None else decode(spec))

    @property
    def spec(self) -> MethodSpec:
        """The controls' current values as a method spec (ValueError for a combination that is not one).

        The threshold is read only for rules that take one (its box is disabled otherwise)."""
        rule = self.rule.value
        return MethodSpec(
            "rsd",
            self.drafter.value,
            int(self.gamma.value),
            rule,
            None if RULES[rule].param is None else self.threshold.value,
            float(self.temperature.value),
        )

    def _sync_threshold(self) -> None:
        param = RULES[self.rule.value].param
        self.threshold.disabled = param is None
        self.threshold.description = "threshold" if param is None else f"threshold ({param})"

    def set_trace(self, trace: DecodeTrace) -> None:
        """Show another trace from its first layer."""
        if not isinstance(trace, DecodeTrace):
            raise TypeError(f"decode(spec) must return a DecodeTrace, got {type(trace).__name__}")
        self.stepper = TraceStepper(trace)
        if len(self.stepper) == 0:
            raise ValueError(f"the {trace.method} trace has no committed layers to step through")
        was = self.slider.value
        self.slider.value = 0  # the observer shows the new trace, unless the value stays 0
        self.slider.max = len(self.stepper) - 1
        if was == 0:
            self._show(0)

    def goto(self, position: int) -> None:
        """Move to a committed layer (clamped to the trace), as the buttons and slider do."""
        self.slider.value = min(max(position, 0), len(self.stepper) - 1)

    def next(self) -> None:
        self.goto(self.stepper.position + 1)

    def prev(self) -> None:
        self.goto(self.stepper.position - 1)

    def redecode(self) -> None:
        """Call ``decode`` with the controls' settings and show the new trace (or the error)."""
        if self.decode is None:
            return
        # Busy while it runs (speculative sampling can take a minute): the button says so.
        self.decode_button.disabled, self.decode_button.description = True, "decoding..."
        self.status.value = '<span style="color:#616161">decoding...</span>'
        try:
            trace = self.decode(self.spec)
            self.set_trace(trace)
        except Exception as err:  # shown in the view: widget callbacks' exceptions go to a hidden log
            self.error = f"{type(err).__name__}: {err}"
            self.status.value = f'<span style="color:#c62828">{html.escape(self.error)}</span>'
            return
        finally:
            self.decode_button.disabled, self.decode_button.description = False, "decode"
        self.error = None
        self.status.value = ""

    def _show(self, position: int) -> None:
        self.stepper.goto(position)
        self.table.value = step_html(self.stepper)
        self.prev_button.disabled = position == 0
        self.next_button.disabled = position == len(self.stepper) - 1
        if self.plot:
            self.image.value = figure_png(plot_refinement(self.stepper, position))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class AcceptanceHeatmap:
    """Acceptance per RFSQ layer for several rules or thresholds: an HTML table and the figure.

    Args:
        traces_by_label: ``{label: traces}`` (one decoding setting per label, same observations).
        title: the figure's title.
        plot: include the figure (:func:`plot_acceptance_heatmap`) as an image.

    Attributes:
        labels, matrix: :func:`acceptance_matrix`.
        table: HTML with the values and each row's accepted layers and main passes per chunk.
        image: PNG of the figure (empty without ``plot``).
        widget: the whole view.
    """

    def __init__(
        self,
        traces_by_label: Mapping[str, Sequence[DecodeTrace]],
        *,
        title: str | None = None,
        plot: bool = True,
    ) -> None:
        import ipywidgets as w

        self.labels, self.matrix = acceptance_matrix(traces_by_label)
        summaries = [
            {
                "accepted": float(np.mean([t.accepted_layers for t in traces])),
                "passes": float(np.mean([t.main_passes for t in traces])),
                "chunks": len(traces),
            }
            for traces in traces_by_label.values()
        ]
        self.table = w.HTML(heatmap_html(self.labels, self.matrix, summaries))
        self.image = w.Image(format="png")
        if plot:
            self.image.value = figure_png(plot_acceptance_heatmap(traces_by_label, title=title), dpi=100)
        self.widget = w.VBox([self.table, self.image] if plot else [self.table])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


__all__ = [
    "ACTION_UNITS",
    "SOURCE_COLOURS",
    "VERDICT_COLOURS",
    "AcceptanceHeatmap",
    "StepThrough",
    "acceptance_matrix",
    "ee_path",
    "figure_png",
    "heatmap_html",
    "legend_html",
    "plot_acceptance_heatmap",
    "plot_layer_step",
    "plot_refinement",
    "refinement",
    "step_html",
    "step_rows",
]
