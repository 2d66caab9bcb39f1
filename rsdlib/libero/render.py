"""Choosing MuJoCo's headless render backend before the simulator is imported.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, so the backend is fixed by
:func:`configure_rendering` before ``robosuite`` or ``libero`` are. EGL is the default (it
works with Mesa's llvmpipe on a CPU and with the NVIDIA driver on a GPU); osmesa is the
fallback when no EGL library is installed.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import warnings

BACKENDS = ("egl", "osmesa", "glx")
#: The system library each backend loads, and the Debian/Ubuntu package that provides it.
_LIBRARIES = {
    "egl": ("EGL", "libegl1 libegl-mesa0"),
    "osmesa": ("OSMesa", "libosmesa6"),
    "glx": ("GL", "libgl1"),
}


class RenderBackendError(RuntimeError):
    """No usable render backend; the message says what to install or set."""


def backend_available(backend: str) -> bool:
    """Whether the system library that ``backend`` loads can be found."""
    return ctypes.util.find_library(_LIBRARIES[backend][0]) is not None


def configure_rendering(backend: str | None = None) -> str:
    """Fix the MuJoCo render backend for this process and return its name.

    Args:
        backend: ``egl``, ``osmesa`` or ``glx``; None takes ``$MUJOCO_GL``, else ``egl``, and falls
            back to ``osmesa`` when EGL is missing.

    Raises:
        RenderBackendError: the backend is unknown or its library is missing, or MuJoCo was
            already imported with another backend.
    """
    explicit = backend or os.environ.get("MUJOCO_GL")
    chosen = (explicit or "egl").lower()
    if chosen not in BACKENDS:
        raise RenderBackendError(f"unknown render backend {chosen!r} (MUJOCO_GL); use one of {BACKENDS}")
    if not backend_available(chosen):
        lib, package = _LIBRARIES[chosen]
        if explicit is None and chosen == "egl" and backend_available("osmesa"):
            warnings.warn(
                "EGL library not found; rendering with osmesa (slower on a GPU machine)", stacklevel=2
            )
            chosen = "osmesa"
        else:
            raise RenderBackendError(
                f"render backend {chosen!r} needs lib{lib}, which is not installed. "
                f"Install it with `apt-get install {package}` (or run `make setup`), "
                f"or pick another backend with MUJOCO_GL=egl|osmesa."
            )
    already = "mujoco" in sys.modules and os.environ.get("MUJOCO_GL")
    if already and already != chosen:
        raise RenderBackendError(
            f"MuJoCo was already imported with MUJOCO_GL={already}; set the backend before importing "
            "robosuite or libero (restart the kernel)"
        )
    os.environ["MUJOCO_GL"] = chosen
    if chosen == "glx":
        os.environ.pop("PYOPENGL_PLATFORM", None)
    else:
        os.environ["PYOPENGL_PLATFORM"] = chosen
    return chosen
