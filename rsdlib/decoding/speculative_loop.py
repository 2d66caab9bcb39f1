"""Residual speculative decoding (RSD): draft RFSQ layers cheaply, verify them in one main pass.

Per chunk: one main prefix pass, which also decodes layer 0 (its block reads no token, so there is
nothing to draft; it is recorded as the first round, without a draft), then rounds. Each round
(for every item still decoding):

1. draft: the drafter proposes ``g = min(gamma, L - c)`` layers after the c committed ones;
2. verify: one main pass over blocks ``c .. c + g`` (block l reads layer l-1, drafted or
   committed) gives the main distribution of every drafted layer, conditioned on the drafted
   layers before it, and of layer ``c + g`` (the bonus);
3. accept: walk the drafted layers in order with the acceptance rule; the first rejected layer
   is replaced by the rule's correction and ends the round; if all g are accepted, the bonus
   layer comes free from the same pass;
4. crop: keep the main cache's blocks below the new committed count (blocks run on a rejected
   draft are dropped) and repeat until L layers are committed.

Sequential main passes per chunk after the prefix fall from L - 1 (plain) to the number of
rounds after the first, at best ``ceil((L - 1) / (gamma + 1))``. Items of a batch are judged
independently: each keeps its own committed count, and the trunk's per-item block masks let
one pass serve them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from rsdlib.decoding.acceptance import AcceptanceRule
from rsdlib.decoding.monitors import DepthHistory, DepthMonitor, judge_depth, pooled_prefix
from rsdlib.decoding.result import (
    DecodeResult,
    Stopwatch,
    check_tokenizer,
    decode_actions,
    mask_past_depth,
)
from rsdlib.decoding.trace import DecodeTrace, RoundRecord
from rsdlib.policies.drafters import Drafter
from rsdlib.policies.heads import RFSQAutoregressive
from rsdlib.policies.processor import ObservationBatch
from rsdlib.policies.sampling import probabilities, sample

if TYPE_CHECKING:
    from rsdlib.tokenizers.base import ActionTokenizer


def _check_settings(rule: AcceptanceRule, gamma: int, temperature: float, generator: Any) -> None:
    if gamma < 1:
        raise ValueError(f"gamma ({gamma}) must be at least 1 layer per round")
    if rule.needs_sampling:
        if temperature <= 0 or generator is None:
            raise ValueError(
                f"rule {rule.name!r} samples: pass temperature > 0 (got {temperature}) and a torch.Generator "
                "(for greedy decoding use the 'exact' rule)"
            )
    elif temperature != 0:
        raise ValueError(
            f"rule {rule.label} compares drafts with the main argmax, so it is greedy: use temperature=0 "
            f"(got {temperature}), or the 'speculative' rule to sample"
        )


@torch.no_grad()
def speculative_decode(
    main: RFSQAutoregressive,
    drafter: Drafter,
    observations: Sequence[Mapping[str, Any]] | ObservationBatch,
    *,
    rule: AcceptanceRule,
    gamma: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    tokenizer: ActionTokenizer | None = None,
    redraft: bool = True,
    top_k: int = 3,
    monitor: DepthMonitor | None = None,
    history: DepthHistory | None = None,
) -> DecodeResult:
    """Decode a batch of chunks with RSD.

    Args:
        main: the ``rfsq_ar`` main policy.
        drafter: proposes layers (its L, N, V must be the main's).
        observations: observation dicts or a prepared batch.
        rule: the acceptance rule (:func:`rsdlib.decoding.acceptance.make_rule`).
        gamma: layers drafted per round.
        temperature: 0 for greedy (``exact`` and the lossy rules); > 0 for ``speculative``.
        generator: the source of every random draw at temperature > 0 (on the main model's device).
        tokenizer: the RFSQ tokenizer, to decode actions (optional; the per-layer refinements for
            display: :meth:`DecodeResult.with_layer_actions`).
        redraft: draft again every round; False drafts only in the first round and then goes on
            plainly (one block per pass).
        top_k: main choices recorded per token in the trace.
        monitor: adaptive depth: after each round the monitor is asked about every layer the
            round committed, in order; at the first layer it says is enough, the item stops
            (layers the round committed past it are dropped). Drafted and verified layers count
            alike. None: all L layers.
        history: what the monitor remembers of the episode's earlier chunks.

    Returns:
        :class:`DecodeResult`; each trace's ``main_passes`` counts the verification passes that
        item took part in (the prefix pass, which decoded layer 0, not included).
    """
    _check_settings(rule, gamma, temperature, generator)
    check_tokenizer(tokenizer, main.config.actions)
    obs = main.prepare(observations)
    B, L, N, V = obs.batch_size, main.L, main.N, main.V
    dev = main.device
    clock = Stopwatch(dev)
    tokens = torch.zeros(B, L, N, dtype=torch.long, device=dev)  # committed layers
    committed = torch.zeros(B, dtype=torch.long, device=dev)
    passes = torch.zeros(B, dtype=torch.long, device=dev)
    sources: list[list[list[str]]] = [[[""] * N for _ in range(L)] for _ in range(B)]
    rounds: list[list[RoundRecord]] = [[] for _ in range(B)]
    draft_steps = 0
    round_index = 0

    with clock.step("prefix"):
        state, block0 = main.prefix_with_first_block(obs)  # layer 0's logits come with the prefix
    first = block0.logits[:, 0]
    # The main states of the block that produced each item's newest committed layer, for a drafter
    # that reads them: block 0's now, then the verify pass's.
    main_hidden = block0.hidden[:, 0] if drafter.reads_main_hidden else None  # (B, N, D)
    with clock.step("draft"):
        drafter.begin(obs=obs, main_state=state)
    depth = torch.full((B,), L, dtype=torch.long, device=dev)
    monitor_values: list[list[float]] = [[] for _ in range(B)]
    hidden = None if monitor is None else pooled_prefix(state.prefix_hidden, state.prefix_valid)
    remaining = None if monitor is None else monitor.predict(hidden)
    committed = _commit_prefix_layer(
        first, tokens, committed, depth, monitor_values, rounds=rounds, sources=sources, monitor=monitor,
        hidden=hidden, remaining=remaining, tokenizer=tokenizer, history=history, temperature=temperature,
        generator=generator, top_k=top_k, clock=clock,
    )  # fmt: skip

    while bool((committed < L).any()):
        active = committed < L  # (B,)
        use_draft = redraft or round_index == 0
        round_index += 1
        g = torch.where(active, (L - committed).clamp(max=gamma), torch.zeros_like(committed))
        if not use_draft:
            g = torch.zeros_like(g)
        G = int(g.max())

        # 1. draft
        if G > 0:
            with clock.step("draft"):
                draft = drafter.propose(
                    tokens=tokens, committed=committed, gamma=G, temperature=temperature, generator=generator,
                    main_hidden=main_hidden,
                )  # fmt: skip
            draft_steps += 1
            x_all, q_all = draft.tokens, draft.q  # (B, G, N), (B, G, N, V)
            if x_all.shape != (B, G, N) or q_all.shape != (B, G, N, V):
                raise ValueError(
                    f"drafter {drafter.name!r} returned tokens {tuple(x_all.shape)} and q {tuple(q_all.shape)}, "
                    f"expected {(B, G, N)} and {(B, G, N, V)}"
                )
        step = "verify" if G > 0 else "plain"
        with clock.step(step):
            # 2. verify blocks c .. c + g in one main pass, fed the drafted layers
            layers = torch.arange(L, device=dev)[None, :]  # (1, L)
            if G > 0:
                rel = layers - committed[:, None]  # (B, L) each layer's offset in the draft
                in_draft = (rel >= 0) & (rel < g[:, None])
                drafted = x_all.gather(1, rel.clamp(0, G - 1)[:, :, None].expand(-1, -1, N))  # (B, L, N)
                work = torch.where(in_draft[:, :, None], drafted, tokens)  # committed + drafted layers
            else:
                work = tokens
            count = torch.where(active, torch.minimum(g + 1, L - committed), torch.zeros_like(g))
            verified = main.run_blocks(state, work, committed, count)
            p_all = probabilities(verified.logits, temperature)  # (B, k, N, V)
            passes += active.long()

            # 3. accept layer by layer, in order; the first rejection ends the item's round
            judging = active.clone()
            accepted = torch.zeros(B, dtype=torch.long, device=dev)
            correction = torch.full((B, N), -1, dtype=torch.long, device=dev)
            flags: list[torch.Tensor] = []  # per j: (B, N) token verdicts
            judged_rows: list[torch.Tensor] = []  # per j: (B,) who was judged at j
            for j in range(G):
                judge = judging & (j < g)
                if not bool(judge.any()):
                    break
                verdict = rule(
                    x=x_all[:, j],
                    q=q_all[:, j],
                    p=p_all[:, j],
                    tokens=work,
                    layer=(committed + j).clamp(max=L - 1),
                    generator=generator,
                )
                flags.append(verdict.token_accepted)
                judged_rows.append(judge)
                ok = judge & verdict.layer_accepted
                rejected = judge & ~verdict.layer_accepted
                accepted += ok.long()
                correction = torch.where(rejected[:, None], verdict.correction, correction)
                judging = ok
            # Commit: accepted drafts, then the correction, or the bonus layer if one is left.
            has_correction = correction[:, 0] >= 0
            bonus_at = g  # offset of the bonus layer in this pass
            has_bonus = active & ~has_correction & (accepted == g) & (committed + g < L)
            k = p_all.shape[1]
            p_bonus = p_all.gather(1, bonus_at.clamp(max=k - 1)[:, None, None, None].expand(-1, 1, N, V))[
                :, 0
            ]
            bonus = sample(p_bonus, temperature=temperature, generator=generator)  # (B, N)
            extra = torch.where(has_correction[:, None], correction, bonus)  # (B, N)
            new_committed = committed + accepted + (has_correction | has_bonus).long()
            as_drafted = (layers >= committed[:, None]) & (layers < (committed + accepted)[:, None])  # (B, L)
            tokens = torch.where(as_drafted[:, :, None], work, tokens)  # work holds the drafts
            last = (layers == (committed + accepted)[:, None]) & (has_correction | has_bonus)[:, None]
            tokens = torch.where(last[:, :, None], extra[:, None, :], tokens)

            # 4. adaptive depth: stop an item at the first committed layer its monitor says is enough
            if monitor is not None:
                new_committed = _stop_where_deep_enough(
                    monitor, committed, new_committed, depth, monitor_values, p_all=p_all, hidden=hidden,
                    remaining=remaining, tokens=tokens, tokenizer=tokenizer, history=history or DepthHistory(),
                )  # fmt: skip

            # 5. crop the cache to the committed blocks (block l read layer l-1)
            main.trunk.truncate(state, new_committed.clamp(max=L))
            if main_hidden is not None:
                newest = (new_committed - 1 - committed).clamp(0, k - 1)  # offset of the newest layer's block
                from_pass = verified.hidden.gather(
                    1, newest[:, None, None, None].expand(-1, 1, *main_hidden.shape[1:])
                )
                main_hidden = torch.where(active[:, None, None], from_pass[:, 0], main_hidden)

        with clock.step("record"):
            _record_round(
                rounds=rounds,
                sources=sources,
                active=active,
                committed=committed,
                g=g,
                accepted=accepted,
                has_correction=has_correction,
                has_bonus=has_bonus,
                extra=extra,
                x_all=x_all if G > 0 else None,
                q_all=q_all if G > 0 else None,
                p_all=p_all,
                flags=flags,
                judged_rows=judged_rows,
                top_k=min(top_k, V),
            )
        committed = new_committed

    if monitor is not None:
        tokens = mask_past_depth(tokens, depth.cpu())
    with clock.step("detokenize"):
        actions = decode_actions(tokenizer, tokens, None if monitor is None else depth.cpu())
    timings = clock.timings("prefix", "draft", "verify", "plain", "detokenize", "record")
    rows = tokens.tolist()
    traces = [
        DecodeTrace(
            method="rsd",
            num_layers=L,
            num_latents=N,
            tokens=rows[i],
            sources=sources[i],
            main_passes=int(passes[i]),
            prefix_layers=main.prefix_layers,
            rounds=rounds[i],
            timings=dict(timings),
            rule=rule.name,
            rule_params=dict(rule.params),
            lossless=rule.lossless,
            gamma=gamma,
            drafter=drafter.name,
            temperature=temperature,
            batch_size=B,
            draft_steps=draft_steps,
        )
        for i in range(B)
    ]
    if monitor is not None:
        for i, trace in enumerate(traces):
            trace.set_depth(int(depth[i]), monitor.name, monitor.threshold, monitor_values[i])
    return DecodeResult(tokens=tokens, actions=actions, traces=traces, pooled_prefix=hidden)


def _commit_prefix_layer(
    first: torch.Tensor,
    tokens: torch.Tensor,
    committed: torch.Tensor,
    depth: torch.Tensor,
    monitor_values: list[list[float]],
    *,
    rounds: list[list[RoundRecord]],
    sources: list[list[list[str]]],
    monitor: DepthMonitor | None,
    hidden: torch.Tensor | None,
    remaining: torch.Tensor | None,
    tokenizer: ActionTokenizer | None,
    history: DepthHistory | None,
    temperature: float,
    generator: torch.Generator | None,
    top_k: int,
    clock: Stopwatch,
) -> torch.Tensor:
    """Commit layer 0 from the prefix pass's logits ``first`` ``(B, N, V)`` (into ``tokens``, in
    place) as a round without a draft, ask the monitor about depth 1, and return the committed
    counts (1, or L where the monitor stopped)."""
    B, N, V = first.shape
    p_first = probabilities(first, temperature)[:, None]  # (B, 1, N, V)
    layer0 = sample(p_first[:, 0], temperature=temperature, generator=generator)  # (B, N)
    tokens[:, 0] = layer0
    new_committed = committed + 1
    if monitor is not None:
        new_committed = _stop_where_deep_enough(
            monitor, committed, new_committed, depth, monitor_values, p_all=p_first, hidden=hidden,
            remaining=remaining, tokens=tokens, tokenizer=tokenizer, history=history or DepthHistory(),
        )  # fmt: skip
    everyone, nobody = (
        torch.ones(B, dtype=torch.bool, device=first.device),
        torch.zeros(B, dtype=torch.bool, device=first.device),
    )
    with clock.step("record"):
        _record_round(
            rounds=rounds, sources=sources, active=everyone, committed=committed, g=torch.zeros_like(committed),
            accepted=torch.zeros_like(committed), has_correction=nobody, has_bonus=everyone, extra=layer0,
            x_all=None, q_all=None, p_all=p_first, flags=[], judged_rows=[], top_k=min(top_k, V),
        )  # fmt: skip
    return new_committed


def _stop_where_deep_enough(
    monitor: DepthMonitor,
    committed: torch.Tensor,
    new_committed: torch.Tensor,
    depth: torch.Tensor,
    values: list[list[float]],
    *,
    p_all: torch.Tensor,
    hidden: torch.Tensor,
    remaining: torch.Tensor | None,
    tokens: torch.Tensor,
    tokenizer: ActionTokenizer | None,
    history: DepthHistory,
) -> torch.Tensor:
    """Ask the monitor about each layer this round committed, in order; where it says the layers
    so far are enough, record the depth (in ``depth``, in place) and end the item (committed L).

    Args:
        committed, new_committed: ``(B,)`` layers held before and after the round.
        depth: ``(B,)`` each item's depth (L until it stops), updated in place.
        values: per item, the monitor's values so far (appended to).
        p_all: ``(B, k, N, V)`` the round's main distributions (offset j is layer committed + j).
        remaining: ``(B, L)`` the depth head's predictions (``monitor.predict``), or None.
    """
    L = tokens.shape[1]
    out = new_committed.clone()
    deciding = depth == L
    for j in range(int((new_committed - committed).max())):
        held = committed + j + 1  # (B,) layers held once offset j is committed
        ask = deciding & (committed + j < new_committed) & (held < L)
        for k in sorted(set(held[ask].tolist())):
            rows = (ask & (held == k)).nonzero()[:, 0]
            go_on, value = judge_depth(
                monitor, layers=k, probs=p_all[rows, j], hidden=hidden[rows], tokens=tokens[rows],
                tokenizer=tokenizer, history=history.rows(rows),
                remaining=None if remaining is None else remaining[rows.to(remaining.device)],
            )  # fmt: skip
            for r, v in zip(rows.tolist(), value.tolist(), strict=True):
                values[r].append(v)
            stop = rows[~go_on.to(rows.device)]
            depth[stop], out[stop], deciding[stop] = k, L, False
    return out


def _record_round(
    *,
    rounds: list[list[RoundRecord]],
    sources: list[list[list[str]]],
    active: torch.Tensor,
    committed: torch.Tensor,
    g: torch.Tensor,
    accepted: torch.Tensor,
    has_correction: torch.Tensor,
    has_bonus: torch.Tensor,
    extra: torch.Tensor,
    x_all: torch.Tensor | None,
    q_all: torch.Tensor | None,
    p_all: torch.Tensor,
    flags: list[torch.Tensor],
    judged_rows: list[torch.Tensor],
    top_k: int,
) -> None:
    """Append one :class:`RoundRecord` per active item and fill in its token sources."""
    top_p, top_t = p_all.topk(top_k, dim=-1)  # (B, k, N, top_k)
    top_p, top_t = top_p.double().tolist(), top_t.tolist()
    if x_all is not None:
        q_x = q_all.gather(-1, x_all[..., None])[..., 0].double().tolist()  # (B, G, N)
        G = x_all.shape[1]
        p_x = p_all[:, :G].gather(-1, x_all[..., None])[..., 0].double().tolist()
        xs = x_all.tolist()
    flag_rows = [f.tolist() for f in flags]
    judged = [j.tolist() for j in judged_rows]
    act, com, gs, acc = active.tolist(), committed.tolist(), g.tolist(), accepted.tolist()
    corr, bon, ext = has_correction.tolist(), has_bonus.tolist(), extra.tolist()
    for i in range(len(act)):
        if not act[i]:
            continue
        gi, c, a = gs[i], com[i], acc[i]
        m = gi + int(bon[i])  # verified layers with a main distribution worth showing
        record = RoundRecord(
            start_layer=c,
            draft_tokens=xs[i][:gi] if gi else [],
            draft_probs=q_x[i][:gi] if gi else [],
            main_probs=p_x[i][:gi] if gi else [],
            main_top_tokens=top_t[i][:m],
            main_top_probs=top_p[i][:m],
            token_accepted=[flag_rows[j][i] for j in range(len(flag_rows)) if judged[j][i]],
            accepted_layers=a,
            correction=ext[i] if corr[i] else None,
            bonus=ext[i] if bon[i] else None,
        )
        rounds[i].append(record)
        src = sources[i]
        for j in range(a):
            src[c + j] = ["accepted"] * len(src[c + j])
        if corr[i]:
            # A correction token equal to the drafted one kept the draft; the rest came from the main model.
            src[c + a] = [
                "accepted" if e == d else "corrected" for e, d in zip(ext[i], xs[i][a], strict=True)
            ]
        elif bon[i]:
            src[c + a] = ["bonus" if gi else "plain"] * len(src[c + a])
