"""Decoding: acceptance rules, plain and speculative loops, and the DecodeTrace they fill."""

from rsdlib.decoding.acceptance import (
    RULE_NAMES,
    AcceptanceRule,
    Verdict,
    action_tolerance,
    exact,
    level_distance,
    make_rule,
    match_rate,
    speculative,
)
from rsdlib.decoding.plain import decode_fast_ar, decode_l1_regression, decode_rfsq_ar, decode_rfsq_parallel
from rsdlib.decoding.result import DecodeResult
from rsdlib.decoding.speculative_loop import speculative_decode
from rsdlib.decoding.stepper import LayerStep, TraceStepper, layer_steps
from rsdlib.decoding.trace import (
    DecodeTrace,
    RoundRecord,
    acceptance_per_layer,
    expected_main_passes,
    summarize,
    traces_to_frame,
)

__all__ = [
    "RULE_NAMES",
    "AcceptanceRule",
    "DecodeResult",
    "DecodeTrace",
    "LayerStep",
    "RoundRecord",
    "TraceStepper",
    "Verdict",
    "acceptance_per_layer",
    "action_tolerance",
    "decode_fast_ar",
    "decode_l1_regression",
    "decode_rfsq_ar",
    "decode_rfsq_parallel",
    "exact",
    "expected_main_passes",
    "layer_steps",
    "level_distance",
    "make_rule",
    "match_rate",
    "speculative",
    "speculative_decode",
    "summarize",
    "traces_to_frame",
]
