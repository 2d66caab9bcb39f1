"""Stepping through a computed DecodeTrace layer by layer (the logic behind the step-through widgets).

The widgets only display; this plain class turns a trace into an ordered list of
:class:`LayerStep` (one per layer the decoding committed, in order) and keeps a cursor, so tests
can drive it without ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsdlib.decoding.trace import DecodeTrace


@dataclass(frozen=True)
class LayerStep:
    """One committed layer.

    Attributes:
        round: the speculative round it was committed in (None for plain decoding).
        layer: the RFSQ layer.
        kind: ``accepted`` (drafted and accepted), ``corrected`` (drafted, rejected, replaced),
            ``bonus`` (free from the verification pass) or ``plain`` (one main pass).
        draft_tokens: ``[N]`` the drafted tokens (None when nothing was drafted for it).
        draft_probs: ``[N]`` q(x) of the drafted tokens.
        main_top_tokens: ``[N][k]`` the main model's top choices (None where not recorded).
        main_top_probs: ``[N][k]`` their probabilities.
        token_accepted: ``[N]`` per-token verdicts (None when nothing was drafted).
        tokens: ``[N]`` the committed tokens.
        action: ``[H][A]`` the chunk decoded from layers 0..layer (None without a tokenizer).
    """

    round: int | None
    layer: int
    kind: str
    draft_tokens: list[int] | None
    draft_probs: list[float] | None
    main_top_tokens: list[list[int]] | None
    main_top_probs: list[list[float]] | None
    token_accepted: list[bool] | None
    tokens: list[int]
    action: list[list[float]] | None


def layer_steps(trace: DecodeTrace) -> list[LayerStep]:
    """The trace's committed layers in decoding order."""
    actions = trace.layer_actions if trace.method in ("rsd", "rfsq_ar", "rfsq_parallel") else None

    def action(layer: int) -> list[list[float]] | None:
        return None if actions is None else actions[layer]

    if not trace.rounds:
        return [
            LayerStep(None, li, "plain", None, None, None, None, None, trace.tokens[li], action(li))
            for li in range(trace.layers_used)
        ]
    steps = []
    for i, r in enumerate(trace.rounds):
        for j in range(r.committed_layers):
            layer = r.start_layer + j
            if layer >= trace.layers_used:
                break  # committed in the round, dropped where the depth monitor stopped
            drafted = j < len(r.draft_tokens)
            if j < r.accepted_layers:
                kind = "accepted"
            elif r.correction is not None:
                kind = "corrected"
            else:
                kind = "bonus" if r.draft_tokens else "plain"
            has_top = j < len(r.main_top_tokens)
            steps.append(
                LayerStep(
                    round=i,
                    layer=layer,
                    kind=kind,
                    draft_tokens=r.draft_tokens[j] if drafted else None,
                    draft_probs=r.draft_probs[j] if drafted else None,
                    main_top_tokens=r.main_top_tokens[j] if has_top else None,
                    main_top_probs=r.main_top_probs[j] if has_top else None,
                    token_accepted=r.token_accepted[j] if j < len(r.token_accepted) else None,
                    tokens=trace.tokens[layer],
                    action=action(layer),
                )
            )
    return steps


class TraceStepper:
    """A cursor over :func:`layer_steps`: ``next``, ``prev``, ``goto``, and what is committed so far.

    Args:
        trace: a computed trace.
    """

    def __init__(self, trace: DecodeTrace) -> None:
        self.trace = trace
        self.steps = layer_steps(trace)
        self.position = -1  # nothing committed yet

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def current(self) -> LayerStep | None:
        return self.steps[self.position] if self.position >= 0 else None

    def goto(self, position: int) -> LayerStep | None:
        """Move to ``position`` (-1 = before the first layer); raises outside the trace."""
        if not -1 <= position < len(self.steps):
            raise IndexError(f"position {position} is outside -1..{len(self.steps) - 1}")
        self.position = position
        return self.current

    def next(self) -> LayerStep | None:
        return self.goto(min(self.position + 1, len(self.steps) - 1))

    def prev(self) -> LayerStep | None:
        return self.goto(max(self.position - 1, -1))

    def committed(self) -> list[list[int]]:
        """``[l][N]`` the layers committed up to the cursor."""
        return [s.tokens for s in self.steps[: self.position + 1]]

    def main_passes_so_far(self) -> int:
        """Main passes after the prefix spent up to the cursor (rounds started); layers the prefix
        pass decoded (``trace.prefix_layers``, and for RSD its round) cost none."""
        if self.position < 0:
            return 0
        free = self.trace.prefix_layers
        if self.current.round is None:  # plain: one pass per layer, or one for all (rfsq_parallel)
            return max(0, min(self.position + 1 - free, self.trace.main_passes))
        return self.current.round + (0 if free else 1)
