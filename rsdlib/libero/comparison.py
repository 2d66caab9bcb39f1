"""Every decoding method of a set of trained models as a LIBERO policy, and what their chunks cost.

The methods: the four heads decoding plainly (``rfsq_ar``, ``rfsq_parallel``, ``l1_regression``,
``fast_ar``) and RSD on the main policy with either drafter (``rsd_head``, ``rsd_tiny``), any
acceptance rule and gamma. ``scripts/evaluate_policies.py`` and the comparison notebook use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Method names and the checkpoint folders (under a models folder) each reads.
METHODS = ("rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar", "rsd_head", "rsd_tiny")
DRAFTERS = {"rsd_head": "head_drafter", "rsd_tiny": "tiny_policy"}


def method_policy(
    method: str,
    models: str | Path,
    *,
    rule: str = "exact",
    gamma: int = 2,
    temperature: float = 0.0,
    name: str | None = None,
    **params: Any,
):
    """A :class:`~rsdlib.libero.learned_policy.LearnedPolicy` for ``method`` from a models folder
    (``rsdlib.policies.recipe`` layout); ``temperature`` > 0 samples (token methods; RSD with the
    ``speculative`` rule)."""
    from rsdlib.libero.learned_policy import from_checkpoint

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    models = Path(models)
    if method in DRAFTERS:
        return from_checkpoint(
            models / "rfsq_ar", drafter_path=models / DRAFTERS[method], rule=rule, gamma=gamma,
            temperature=temperature, name=name or method, **params,
        )  # fmt: skip
    return from_checkpoint(models / method, temperature=temperature, name=name or method)


def rsd_setting(spec: str) -> tuple[str, str, float | None] | None:
    """An RSD spec's parts for grouping results: ``"rsd_head:g3:match_rate:0.5"`` ->
    ``("rsd_head:g3", "match_rate", 0.5)``, ``"rsd_head:g2:exact@1"`` -> ``("rsd_head:g2", "exact",
    None)`` (a temperature is dropped); None for a plain method. Validation is
    :func:`policy_from_spec`'s."""
    if not spec.startswith(tuple(DRAFTERS)):
        return None
    parts = spec.partition("@")[0].split(":")
    if len(parts) < 3:
        return None
    threshold = float(parts[3]) if len(parts) == 4 else None
    return ":".join(parts[:2]), parts[2], threshold


def policy_from_spec(spec: str, models: str | Path):
    """A method from a spec string: a plain method name (``"fast_ar"``), or RSD as
    ``"rsd_head:g2:exact"`` / ``"rsd_tiny:g3:match_rate:0.5"`` (drafter, gamma, rule[:threshold]);
    a trailing ``@T`` samples at temperature T (``"rfsq_ar@1"``, ``"rsd_head:g2:speculative@1"``).
    The policy's name is the spec."""
    from rsdlib.decoding.benchmark import rule_spec

    body, at, temp = spec.partition("@")
    try:
        temperature = float(temp) if at else 0.0
    except ValueError:
        raise ValueError(f"{spec!r}: write a temperature after '@' as a number, e.g. rfsq_ar@1") from None
    method, _, rest = body.partition(":")
    if method not in DRAFTERS:
        if rest:
            raise ValueError(f"{spec!r}: only RSD methods ({sorted(DRAFTERS)}) take :g<gamma>:<rule>")
        return method_policy(method, models, temperature=temperature, name=spec)
    g, _, rule_text = rest.partition(":")
    if not g.startswith("g") or not g[1:].isdigit() or not rule_text:
        raise ValueError(
            f"{spec!r}: write RSD as {method}:g<gamma>:<rule>[:threshold], e.g. {method}:g2:exact"
        )
    rule, params = rule_spec(rule_text)
    return method_policy(
        method, models, rule=rule, gamma=int(g[1:]), temperature=temperature, name=spec, **params
    )


def chunk_stats(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Decode latency (median and p90, ms; the first chunk of a worker includes warm-up), mean
    main passes and, for RSD, mean accepted layers per chunk and acceptance per RFSQ layer, over
    every chunk of the given episode records (their ``diagnostics``)."""
    chunks = [c for r in records for c in r.get("diagnostics") or []]
    if not chunks:
        return {}
    out = {
        "chunks": len(chunks),
        "latency_median_ms": float(np.median([c["latency_ms"]["total"] for c in chunks])),
        "latency_p90_ms": float(np.percentile([c["latency_ms"]["total"] for c in chunks], 90)),
        "main_passes": float(np.mean([c["main_passes"] for c in chunks])),
    }
    if "accepted_layers" in chunks[0]:
        out["accepted_layers"] = float(np.mean([c["accepted_layers"] for c in chunks]))
        out["acceptance_per_layer"] = _pooled_acceptance(chunks)
    return out


def _pooled_acceptance(chunks: Sequence[dict[str, Any]]) -> list[float | None]:
    """Per RFSQ layer, drafted layers accepted over drafted layers judged, pooled over chunks
    (None for a layer never judged)."""
    judged: dict[int, list[bool]] = {}
    for c in chunks:
        for layer, accepted in c["judged"]:
            judged.setdefault(int(layer), []).append(bool(accepted))
    num_layers = max(len(c["layer_kinds"]) for c in chunks)
    return [float(np.mean(judged[k])) if k in judged else None for k in range(num_layers)]
