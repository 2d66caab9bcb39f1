"""MethodSpec: one grammar for a decoding method, read back exactly; bad specs say what to write."""

from __future__ import annotations

import pytest

from rsdlib.decoding.acceptance import RULES
from rsdlib.decoding.spec import MethodSpec

GOOD = [
    "rfsq_ar", "rfsq_parallel", "l1_regression", "fast_ar", "rfsq_ar@1", "fast_ar@0.7",
    "rsd_head:g2:exact", "rsd_tiny:g3:match_rate:0.5", "rsd_head:g1:level_distance:1",
    "rsd_head:g3:action_tolerance:0.05", "rsd_head:g2:speculative@1", "rsd_tiny:g2:exact:once",
    "rfsq_ar+entropy:0.2", "rsd_head:g3:exact+fixed:2", "rsd_head:g2:speculative+jerk:0.05@0.5",
]  # fmt: skip


@pytest.mark.parametrize("text", GOOD)
def test_a_spec_reads_back_as_it_was_written(text):
    spec = MethodSpec.parse(text)
    assert str(spec) == text and MethodSpec.parse(str(spec)) == spec


def test_a_spec_knows_its_rule_and_what_it_guarantees():
    lossy = MethodSpec.parse("rsd_tiny:g3:match_rate:0.5")
    assert (lossy.method, lossy.drafter, lossy.gamma, lossy.rule, lossy.rule_params) == (
        "rsd", "tiny", 3, "match_rate", {"tau": 0.5},
    )  # fmt: skip
    assert not lossy.lossless and lossy.rule_label == "match_rate(tau=0.5) [lossy]"
    assert lossy.setting == "rsd_tiny:g3" and lossy.head == "rfsq_ar"
    assert MethodSpec.parse("rsd_head:g2:exact").lossless and MethodSpec.parse("l1_regression").lossless
    assert not MethodSpec.parse("rfsq_ar+fixed:2").lossless  # stopping early changes the chunk
    assert not MethodSpec.parse("rsd_head:g2:exact+entropy:0.3").lossless
    assert type(MethodSpec.parse("rsd_head:g1:level_distance:1").param) is int  # the rule's own type
    assert not MethodSpec.parse("rsd_tiny:g2:exact:once").redraft
    for name, kind in RULES.items():  # every rule of the table has a spec
        text = (
            f"rsd_head:g2:{name}"
            + ("" if kind.param is None else ":1")
            + ("@1" if kind.needs_sampling else "")
        )
        assert MethodSpec.parse(text).rule == name


@pytest.mark.parametrize(
    "text, says",
    [
        ("beam", "unknown method"),
        ("rsd_head:exact", "write RSD as"),
        ("fast_ar:g2:exact", "only RSD methods"),
        ("rsd_head:g2:match_rate", "needs its tau"),
        ("rsd_head:g2:bogus", "unknown rule"),
        ("rsd_head:g2:exact@1", "temperature"),
        ("rsd_head:g2:speculative", "temperature"),
        ("rsd_head:g0:exact", "gamma"),
        ("rsd_head:g2:level_distance:0.5", "integer"),
        ("rsd_head:g2:match_rate:2", r"\(0, 1\]"),
        ("l1_regression@1", "deterministic"),
        ("rfsq_ar@hot", "temperature after '@'"),
        ("rfsq_parallel+fixed:2", "layer by layer"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        MethodSpec.parse(text)
