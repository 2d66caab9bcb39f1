"""DecodeTrace: what one chunk's decoding did, round by round, as plain JSON-able data.

A trace holds, per speculative round, the drafted tokens with their draft probabilities q(x),
the main probabilities p(x) and the main model's top choices, per-token accept or reject, the
correction or bonus layer; per chunk, the committed tokens, which source every token came from,
the decoded action after each layer, the main passes used and the wall times. Plain decoding
fills the same type (no rounds). :func:`summarize` turns many traces into the numbers the
paper reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from typing import Any

import numpy as np

from rsdlib.decoding.acceptance import rule_label
from rsdlib.decoding.spec import MethodSpec

#: Where a committed token came from.
SOURCES = ("accepted", "corrected", "bonus", "plain")


@dataclass
class RoundRecord:
    """One speculative round for one chunk (one main verification pass).

    Attributes:
        start_layer: first drafted layer (layers below were committed before the round).
        draft_tokens: ``[g][N]`` drafted tokens for layers ``start_layer + j``.
        draft_probs: ``[g][N]`` q(x), the draft probability of each drafted token.
        main_probs: ``[g][N]`` p(x), the main probability of each drafted token.
        main_top_tokens: ``[m][N][k]`` the main model's top-k tokens for each verified layer
            (m = g, plus 1 when the pass also gave the bonus layer).
        main_top_probs: ``[m][N][k]`` their probabilities.
        token_accepted: ``[j][N]`` per-token verdicts of the judged layers (every accepted
            layer and the first rejected one).
        accepted_layers: drafted layers committed as drafted.
        correction: ``[N]`` the layer committed at the first rejection, else None.
        bonus: ``[N]`` the free layer from the same pass when all drafts were accepted, else None.
    """

    start_layer: int
    draft_tokens: list[list[int]]
    draft_probs: list[list[float]]
    main_probs: list[list[float]]
    main_top_tokens: list[list[list[int]]]
    main_top_probs: list[list[list[float]]]
    token_accepted: list[list[bool]]
    accepted_layers: int
    correction: list[int] | None = None
    bonus: list[int] | None = None

    @property
    def committed_layers(self) -> int:
        """Layers this round added (accepted, plus the correction or the bonus)."""
        return self.accepted_layers + int(self.correction is not None or self.bonus is not None)


@dataclass
class DecodeTrace:
    """One chunk's decoding.

    Attributes:
        method: ``rsd``, ``rfsq_ar``, ``rfsq_parallel``, ``l1_regression`` or ``fast_ar``.
        num_layers: L (token layers; 0 for ``l1_regression``).
        num_latents: N.
        tokens: ``[L][N]`` committed tokens (``[1][T]`` for ``fast_ar``).
        sources: ``[L][N]`` where each token came from (:data:`SOURCES`).
        main_passes: sequential main passes after the prefix pass.
        prefix_layers: layers the prefix pass itself decoded (``rfsq_ar`` and RSD: layer 0,
            whose block reads no token); for RSD the first round is that pass's (no draft).
        rounds: speculative rounds (empty for plain decoding).
        layer_actions: ``[L][H][A]`` the chunk decoded from the first l+1 layers (the tokenizer's
            ``decode`` units), once :meth:`DecodeResult.with_layer_actions` filled it (decoding
            leaves it None); ``[1][H][A]`` for ``l1_regression``.
        timings: seconds: ``prefix``, ``draft``, ``verify``, ``plain``, ``detokenize``, ``record``
            (building the trace), ``total``
            (for a whole batch; see ``batch_size``).
        rule: the acceptance rule's name (``rsdlib.decoding.acceptance.RULES``), RSD only.
        rule_params: its parameters (``{"tau": 0.5}``), RSD only.
        lossless: whether the output equals the main model's (greedy tokens or distribution).
        gamma: layers drafted per round, RSD only.
        drafter: the drafter's name, RSD only.
        temperature: 0 for greedy.
        batch_size: items decoded together (timings are for the batch).
        draft_steps: drafter calls.
        depth: layers decoded when a depth monitor stopped early (None: all L); ``tokens`` and
            ``sources`` then hold ``depth`` layers.
        monitor: the depth monitor's name (None without one).
        depth_threshold: its threshold.
        monitor_values: its value after each layer it was asked about (layer 1, 2, ...).
    """

    method: str
    num_layers: int
    num_latents: int
    tokens: list[list[int]]
    sources: list[list[str]]
    main_passes: int
    prefix_layers: int = 0
    rounds: list[RoundRecord] = field(default_factory=list)
    layer_actions: list[list[list[float]]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rule: str | None = None
    rule_params: dict[str, Any] = field(default_factory=dict)
    lossless: bool = True
    gamma: int | None = None
    drafter: str | None = None
    temperature: float = 0.0
    batch_size: int = 1
    draft_steps: int = 0
    depth: int | None = None
    monitor: str | None = None
    depth_threshold: float | None = None
    monitor_values: list[float | None] = field(default_factory=list)

    def set_depth(self, depth: int, monitor: str, threshold: float, values: list[float]) -> None:
        """Record where a depth monitor stopped: keep the first ``depth`` layers' tokens and sources."""
        self.depth, self.monitor, self.depth_threshold = depth, monitor, threshold
        # inf (no history yet: go on) is stored as None, so that traces stay strict JSON
        self.monitor_values = [float(v) if math.isfinite(v) else None for v in values]
        self.tokens, self.sources = self.tokens[:depth], self.sources[:depth]

    @property
    def layers_used(self) -> int:
        """Layers the chunk was decoded from (L unless a depth monitor stopped early)."""
        return self.num_layers if self.depth is None else self.depth

    @property
    def rule_label(self) -> str | None:
        """``match_rate(tau=0.5) [lossy]``: the rule as figures print it (None for plain decoding)."""
        return None if self.rule is None else rule_label(self.rule, self.rule_params)

    @property
    def spec(self) -> MethodSpec:
        """The method spec this chunk was decoded with (the drafter as the drafter names itself)."""
        adaptive = {"monitor": self.monitor, "depth_threshold": self.depth_threshold}
        if self.method != "rsd":
            return MethodSpec(method=self.method, temperature=self.temperature, **adaptive)
        param = next(iter(self.rule_params.values()), None)
        return MethodSpec("rsd", self.drafter, self.gamma, self.rule, param, self.temperature, **adaptive)

    # -- accounting -------------------------------------------------------------------------------

    @property
    def accepted_layers(self) -> int:
        """Drafted layers committed as drafted, over the chunk."""
        return sum(r.accepted_layers for r in self.rounds)

    def sources_from_rounds(self) -> list[list[str]]:
        """Rebuild :attr:`sources` from the rounds alone (a check of the bookkeeping).

        Raises:
            ValueError: a position claimed twice or never.
        """
        out: list[list[str | None]] = [[None] * self.num_latents for _ in range(self.layers_used)]

        def claim(layer: int, n: int, source: str) -> None:
            if layer >= self.layers_used:
                return  # committed in the round, dropped where the depth monitor stopped
            if out[layer][n] is not None:
                raise ValueError(f"layer {layer} latent {n} claimed twice ({out[layer][n]}, {source})")
            out[layer][n] = source

        for r in self.rounds:
            for j in range(r.accepted_layers):
                for n in range(self.num_latents):
                    claim(r.start_layer + j, n, "accepted")
            nxt = r.start_layer + r.accepted_layers
            if r.correction is not None:
                drafted = r.draft_tokens[r.accepted_layers]
                for n in range(self.num_latents):
                    claim(nxt, n, "accepted" if r.correction[n] == drafted[n] else "corrected")
            elif r.bonus is not None:
                for n in range(self.num_latents):
                    claim(nxt, n, "bonus" if r.draft_tokens else "plain")
        missing = [(k, n) for k, row in enumerate(out) for n, s in enumerate(row) if s is None]
        if missing and self.rounds:
            raise ValueError(f"positions never committed: {missing[:5]}")
        return out  # type: ignore[return-value]

    def diagnostics(self) -> dict[str, Any]:
        """A compact JSON-able per-chunk record (what an evaluation harness stores per chunk)."""
        out: dict[str, Any] = {
            "method": self.method,
            "main_passes": self.main_passes,
            "latency_s": self.timings.get("total"),
            "timings": dict(self.timings),
        }
        if self.method == "rsd":
            out |= {
                "rule": self.rule,
                "rule_params": dict(self.rule_params),
                "lossless": self.lossless,
                "gamma": self.gamma,
                "drafter": self.drafter,
                "rounds": len(self.rounds),
                "accepted_layers": self.accepted_layers,
                # per judged layer: 1 accepted, 0 rejected (the round's order)
                "judged": [
                    [r.start_layer + j, int(j < r.accepted_layers)]
                    for r in self.rounds
                    for j in range(len(r.token_accepted))
                ],
            }
        if self.monitor is not None:
            out |= {
                "depth": self.layers_used,
                "num_layers": self.num_layers,
                "monitor": self.monitor,
                "depth_threshold": self.depth_threshold,
                "monitor_values": list(self.monitor_values),
            }
        return out

    # -- JSON and frames ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeTrace:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"DecodeTrace got unknown keys {unknown}")
        data = dict(data)
        data["rounds"] = [RoundRecord(**r) for r in data.get("rounds", [])]
        return cls(**data)

    def to_json(self) -> str:
        """JSON text; :meth:`from_json` gives back an equal trace (floats round-trip exactly)."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DecodeTrace:
        return cls.from_dict(json.loads(text))

    def to_frame(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per committed token.

        Columns: ``method, rule, lossless, layer, latent, token, source, round, draft_token,
        q, p_draft, main_top1, main_top1_p``.
        """
        import pandas as pd

        rows = []
        where: dict[int, tuple[int, int]] = {}  # layer -> (round index, offset in round)
        for i, r in enumerate(self.rounds):
            for j in range(r.committed_layers):
                where[r.start_layer + j] = (i, j)
        for li in range(self.num_layers):
            for n in range(self.num_latents):
                row: dict[str, Any] = {
                    "method": self.method,
                    "rule": self.rule_label,
                    "lossless": self.lossless,
                    "layer": li,
                    "latent": n,
                    "token": self.tokens[li][n],
                    "source": self.sources[li][n],
                    "round": None,
                    "draft_token": None,
                    "q": None,
                    "p_draft": None,
                    "main_top1": None,
                    "main_top1_p": None,
                }
                if li in where:
                    i, j = where[li]
                    r = self.rounds[i]
                    row["round"] = i
                    if j < len(r.draft_tokens):
                        row.update(
                            draft_token=r.draft_tokens[j][n],
                            q=r.draft_probs[j][n],
                            p_draft=r.main_probs[j][n],
                        )
                    if j < len(r.main_top_tokens):
                        row.update(
                            main_top1=r.main_top_tokens[j][n][0], main_top1_p=r.main_top_probs[j][n][0]
                        )
                rows.append(row)
        return pd.DataFrame(rows)


def traces_to_frame(traces: list[DecodeTrace]) -> Any:
    """Many traces as one frame with a ``chunk`` column."""
    import pandas as pd

    frames = [t.to_frame().assign(chunk=i) for i, t in enumerate(traces)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# -- summaries --------------------------------------------------------------------------------------


def acceptance_per_layer(traces: list[DecodeTrace]) -> list[float | None]:
    """Per layer: accepted / judged over all rounds (None where a layer was never judged)."""
    if not traces:
        return []
    L = traces[0].num_layers
    judged, accepted = np.zeros(L), np.zeros(L)
    for t in traces:
        for r in t.rounds:
            for j in range(len(r.token_accepted)):
                judged[r.start_layer + j] += 1
                accepted[r.start_layer + j] += j < r.accepted_layers
    return [float(a / n) if n else None for a, n in zip(accepted, judged, strict=True)]


def expected_main_passes(alpha: list[float | None], gamma: int, *, start: int = 0) -> float:
    """Main passes per chunk that per-layer acceptance rates predict (layers independent), after
    the prefix pass has committed the first ``start`` layers (RSD: 1, see ``prefix_layers``).

    Each round drafts ``min(gamma, L - c)`` layers after c committed ones, accepts layer l with
    probability ``alpha[l]`` in order, and commits the accepted ones plus one more (the
    correction, or the bonus layer when one is left).
    """
    return expected_round_cost(alpha, gamma, start=start)


def expected_round_cost(
    alpha: list[float | None],
    gamma: int,
    *,
    start: int = 0,
    round_cost: Callable[[int], float] = lambda k: 1.0,
) -> float:
    """The expected sum over RSD's rounds of ``round_cost(k)``, k the blocks its verify pass
    covers (``min(g + 1, L - c)`` after c committed layers, g drafted), under the rounds of
    :func:`expected_main_passes` (which counts each round as 1)."""
    L = len(alpha)
    a = [0.0 if x is None else float(x) for x in alpha]

    @cache
    def cost(c: int) -> float:  # from c committed layers to L
        if c >= L:
            return 0.0
        g = min(gamma, L - c)
        total, reach = round_cost(min(g + 1, L - c)), 1.0
        for j in range(g):
            total += reach * (1 - a[c + j]) * cost(c + j + 1)  # rejected at c + j: the correction
            reach *= a[c + j]
        return total + reach * cost(min(c + g + 1, L))  # all accepted: the bonus layer too

    return cost(start)


def summarize(traces: list[DecodeTrace], *, baseline: list[DecodeTrace] | None = None) -> dict[str, Any]:
    """The numbers to report for a set of chunks decoded one way.

    Args:
        traces: chunks decoded with one method/rule/drafter/gamma.
        baseline: the same chunks decoded plainly (``rfsq_ar``), for the measured speedup.

    Returns:
        A JSON-able dict: ``acceptance_per_layer``, ``accepted_layers_per_chunk``,
        ``main_passes_per_chunk`` (mean), ``expected_main_passes`` (from the acceptance rates),
        ``predicted_speedup_passes`` (L / expected passes), ``predicted_speedup_time`` (a cost
        model from the measured mean prefix, draft and pass times), ``measured_speedup`` (mean
        baseline total / mean total), latency median and p90, and labels.
    """
    if not traces:
        raise ValueError("summarize got no traces")
    t0 = traces[0]
    L = t0.num_layers
    total = np.array([t.timings.get("total", np.nan) for t in traces])
    out: dict[str, Any] = {
        "method": t0.method,
        "rule": t0.rule_label,
        "lossless": t0.lossless,
        "gamma": t0.gamma,
        "drafter": t0.drafter,
        "chunks": len(traces),
        "main_passes_per_chunk": float(np.mean([t.main_passes for t in traces])),
        "latency_median_s": float(np.median(total)),
        "latency_p90_s": float(np.percentile(total, 90)),
    }
    if t0.method == "rsd":
        alpha = acceptance_per_layer(traces)
        free = t0.prefix_layers  # layers the prefix pass decoded (its round has no pass of its own)
        expected = expected_main_passes(alpha, t0.gamma or 1, start=free)
        rounds = float(np.mean([len(t.rounds) - (1 if t.prefix_layers else 0) for t in traces]))
        prefix = float(np.mean([t.timings.get("prefix", 0.0) for t in traces]))
        draft = float(np.mean([t.timings.get("draft", 0.0) for t in traces]))
        verify = float(np.mean([t.timings.get("verify", 0.0) for t in traces]))
        passes = out["main_passes_per_chunk"]
        per_pass = verify / passes if passes else 0.0
        per_round_draft = draft / rounds if rounds else 0.0
        plain_cost = prefix + (L - free) * per_pass
        # A verify pass runs more positions than a plain block pass; with a baseline, use its pass time.
        if baseline:
            base_plain = float(np.mean([t.timings.get("plain", 0.0) for t in baseline]))
            base_prefix = float(np.mean([t.timings.get("prefix", 0.0) for t in baseline]))
            plain_cost = base_prefix + base_plain
        rsd_cost = prefix + expected * per_pass + expected * per_round_draft
        out |= {
            "acceptance_per_layer": alpha,
            "accepted_layers_per_chunk": float(np.mean([t.accepted_layers for t in traces])),
            "rounds_per_chunk": rounds,
            "expected_main_passes": expected,
            "predicted_speedup_passes": (L - free) / expected if expected else None,
            "predicted_speedup_time": plain_cost / rsd_cost if rsd_cost else None,
        }
    if baseline:
        base = float(np.mean([t.timings.get("total", np.nan) for t in baseline]))
        out["measured_speedup"] = base / float(np.mean(total))
    return out
