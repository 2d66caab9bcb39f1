"""Progress bars that suit where they are shown: a terminal, a notebook, or a log file.

``progress(iterable, **kwargs)`` takes tqdm's arguments and returns a tqdm bar:

- in a terminal (stderr is a TTY) and in a Jupyter kernel with widgets: ``tqdm.auto``'s bar,
  as it is;
- anywhere else (papermill without widgets, CI, a script whose stderr goes to a file): a bar
  that writes one plain line per update, at most every :data:`LOG_INTERVAL_S` seconds
  (``TQDM_MININTERVAL`` overrides it), plus the first and the last, with no carriage returns
  and in ASCII, so a log holds a handful of readable lines instead of one ``\\r``-joined line
  per update.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.std import tqdm as std_tqdm

#: Seconds between two lines of a bar written to a log (not a terminal, not a notebook).
LOG_INTERVAL_S = 30.0

_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cursor moves of nested bars


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> std_tqdm:
    """A tqdm bar over ``iterable`` (tqdm's keyword arguments: ``total``, ``desc``, ``disable``...)
    that prints rarely and without ``\\r`` when its stream is neither a terminal nor a notebook."""
    from tqdm.auto import tqdm as auto_tqdm

    stream = kwargs.get("file") or sys.stderr
    if _widgets(auto_tqdm) or _is_tty(stream):
        return auto_tqdm(iterable, **kwargs)
    interval = float(os.environ.get("TQDM_MININTERVAL", LOG_INTERVAL_S))
    kwargs.setdefault("mininterval", interval)
    # tqdm's monitor thread forces a refresh after maxinterval: no sooner than mininterval either
    kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), kwargs["mininterval"])
    kwargs.setdefault("ascii", True)
    kwargs["file"] = LineStream(stream)
    return LogBar(iterable, **kwargs)


def _widgets(bar_class: type) -> bool:
    """Whether ``tqdm.auto`` chose the notebook's widget bar (a Jupyter kernel with ipywidgets)."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:  # pragma: no cover - tqdm without its notebook module
        return False
    return issubclass(bar_class, notebook_tqdm)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineStream:
    """A text stream for a log: each status tqdm writes (``\\r`` + status + padding) becomes one
    line; blank statuses and cursor moves are dropped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in _ESCAPES.sub("", text).replace("\r", "\n").split("\n"):
            part = part.rstrip()  # the padding that blanked a longer previous status
            if part:
                self.stream.write(part + "\n")
        return len(text)

    def flush(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)


class LogBar(std_tqdm):
    """tqdm for logs: a forced refresh (``set_postfix``, ``set_description``) also waits for
    ``mininterval``, so a loop that sets a postfix every step prints no more often than one that
    only updates. The first status and the last (on close) are always written."""

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> bool | None:
        if self.disable:  # a disabled bar has no clock
            return None
        now = self._time()
        shown = getattr(self, "_shown_at", None)
        if shown is not None and now - shown < self.mininterval:
            return False
        self._shown_at = now
        return super().refresh(nolock=nolock, lock_args=lock_args)
