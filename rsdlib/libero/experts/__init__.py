"""Scripted experts for LIBERO: privileged planners that drive OSC_POSE like a teleoperator."""

from rsdlib.libero.experts.expert import ExpertConfig, ScriptedExpert, UnsupportedGoal
from rsdlib.libero.experts.motion import MotionConfig

__all__ = ["ExpertConfig", "MotionConfig", "ScriptedExpert", "UnsupportedGoal"]
