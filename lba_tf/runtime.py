"""Process settings for TensorFlow on CPU: the C allocator's treatment of large tensors; which kernels run.

TensorFlow allocates CPU tensors with ``malloc``. glibc serves every block above 32 MiB (many
activations and gradients of a training step at 288 x 144) with a fresh ``mmap`` and returns it
to the kernel on ``free``, so each step pays to fault in and zero those pages again. On the
2-core machine of ``benchmarks/results.md`` the ResNet-50 baseline step at 288 x 144 ran 1.3
to 1.7 times faster once :func:`tune_allocator` made glibc keep freed memory for reuse; its
peak memory stayed about the same (7.3 GB), the full method's grew by under a tenth over many
steps (11.5 vs 10.7 GB). The entry points (training, evaluation, export, the server, the
benchmarks) call it before TensorFlow starts its threads; ``LBA_TF_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "LBA_TF_MALLOC"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

SETTINGS = {
    _M_ARENA_MAX: 1,  # one heap: threads' own arenas are 64 MiB mmap'd heaps, trimmed back too
    _M_MMAP_MAX: 0,  # large blocks from the heap, not from mmap
    _M_TRIM_THRESHOLD: 2**31 - 1,  # keep freed memory at the top of the heap (up to 2 GiB)
    _M_TOP_PAD: 2**26,  # grow the heap 64 MiB at a time
}
"""The ``mallopt`` parameters set and their values."""

_state = {"mode": None}


def tune_allocator() -> str:
    """Make glibc's malloc reuse freed large blocks instead of returning them; idempotent.

    Call it before TensorFlow is imported. Memory freed by one training step is reused by the
    next, so the process's resident size stays near its peak instead of falling between steps.

    Returns:
        ``"tuned"``; ``"system"`` when ``LBA_TF_MALLOC=system`` is set or the C library is not
        glibc (macOS, musl), where nothing is changed.

    Raises:
        ValueError: ``LBA_TF_MALLOC`` holds something other than ``tuned`` or ``system``.
    """
    if _state["mode"] is not None:
        return _state["mode"]
    wanted = os.environ.get(ENV_VAR, "tuned")
    if wanted not in ("tuned", "system"):
        raise ValueError(f"{ENV_VAR} must be 'tuned' or 'system', got {wanted!r}")
    mode = "system"
    if wanted == "tuned" and sys.platform.startswith("linux"):
        mallopt = _glibc_mallopt()
        if mallopt is not None and all(mallopt(param, value) == 1 for param, value in SETTINGS.items()):
            mode = "tuned"
    _state["mode"] = mode
    return mode


def allocator_mode() -> str | None:
    """What :func:`tune_allocator` did in this process (``None``: it was not called)."""
    return _state["mode"]


def _glibc_mallopt():
    """glibc's ``mallopt``, or ``None`` when the C library is another."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    TensorFlow decides once, when it loads: on by default on x86 CPUs with AVX-512 VNNI/BF16 or
    AMX, off on others; ``TF_ENABLE_ONEDNN_OPTS=1`` or ``=0`` forces either on any x86 CPU.
    """
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
