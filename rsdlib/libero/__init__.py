"""The LIBERO layer: tasks, the evaluation protocol, and a protocol-following env.

``protocol`` is plain data and imports nothing heavy. ``tasks`` and ``env`` import LIBERO
(and so MuJoCo) only when a task is looked up or an env is made.
"""

import logging

from rsdlib.libero.protocol import MAX_STEPS, SUITES, WAIT_ACTION, Protocol, check_suite

__all__ = ["MAX_STEPS", "SUITES", "WAIT_ACTION", "Protocol", "check_suite"]


def _quiet_robosuite_macro_warning(record: logging.LogRecord) -> bool:
    # robosuite warns about a missing private macro file on every import (three lines per
    # worker process); the defaults are what LIBERO expects, so the advice is noise here.
    return "macro file" not in record.getMessage() and "setup_macros.py" not in record.getMessage()


logging.getLogger("robosuite_logs").addFilter(_quiet_robosuite_macro_warning)
