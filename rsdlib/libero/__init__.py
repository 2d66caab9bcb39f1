"""The LIBERO layer: tasks, the evaluation protocol, and a protocol-following env.

``protocol`` is plain data and imports nothing heavy. ``tasks`` and ``env`` import LIBERO
(and so MuJoCo) only when a task is looked up or an env is made.
"""

from rsdlib.libero.protocol import MAX_STEPS, SUITES, WAIT_ACTION, Protocol, check_suite

__all__ = ["MAX_STEPS", "SUITES", "WAIT_ACTION", "Protocol", "check_suite"]
