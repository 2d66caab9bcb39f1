"""The cost model: RSD's speedup over plain decoding from measured pass costs and acceptance.

``scripts/bench_pass_costs.py`` measures the costs (prefix pass, block pass, verify pass over k
blocks) at model sizes up to ~1B parameters on the device at hand; acceptance per layer comes
from the trained models (``scripts/bench_rsd.py``). Together they predict the speedup at sizes
no trained model has, such as OpenVLA-OFT's: a prediction, and labelled so wherever shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rsdlib.decoding.trace import expected_round_cost


def predicted_speedup(
    acceptance: Sequence[float | None],
    *,
    gamma: int,
    first_pass_ms: float,
    pass_ms: Mapping[int, float],
    draft_ms: float = 0.0,
    start: int = 1,
) -> float:
    """Plain decoding time / RSD time that pass costs and acceptance rates predict.

    Plain decoding runs one pass over the prefix and the first ``start`` blocks
    (``first_pass_ms``: layer 0 reads no drafted token), then ``L - start`` block passes
    (``pass_ms[1]``). RSD runs the same first pass, then rounds: after c committed layers it
    drafts ``g = min(gamma, L - c)`` layers (``draft_ms`` per round) and verifies them in one pass
    over ``k = min(g + 1, L - c)`` blocks (``pass_ms[k]``); drafted layer l is accepted with
    probability ``acceptance[l]``, in order and independently, and the round commits the accepted
    layers plus one more. With every pass cost equal and no drafting cost, RSD's rounds are
    :func:`rsdlib.decoding.expected_main_passes`.

    Args:
        acceptance: ``(L,)`` acceptance rate per RFSQ layer (entries below ``start`` are never
            drafted; None counts as 0).
        gamma: layers drafted per round (>= 1).
        first_pass_ms: the prefix pass with the first ``start`` blocks.
        pass_ms: cost of one main pass over k blocks, for k = 1 (a block pass) .. ``gamma + 1``.
        draft_ms: drafting cost per round.
        start: layers the first pass decodes (``RFSQAutoregressive.prefix_layers``: 1).
    """
    L = len(acceptance)
    if gamma < 1:
        raise ValueError(f"gamma ({gamma}) must be at least 1")
    if not 0 <= start < L:
        raise ValueError(f"start ({start}) must be in [0, L) with L = {L} layers")
    if any(x is not None and not 0.0 <= x <= 1.0 for x in acceptance):
        raise ValueError(f"acceptance rates must lie in [0, 1], got {list(acceptance)}")
    needed = sorted({min(min(gamma, L - c) + 1, L - c) for c in range(start, L)} | {1})
    missing = [k for k in needed if k not in pass_ms]
    if missing:
        raise ValueError(f"pass_ms lacks the cost of a pass over {missing} blocks (needs k in {needed})")
    rsd = expected_round_cost(
        list(acceptance), gamma, start=start, round_cost=lambda k: pass_ms[k] + draft_ms
    )
    return (first_pass_ms + (L - start) * pass_ms[1]) / (first_pass_ms + rsd)
