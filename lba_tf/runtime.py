"""Process settings for TensorFlow on CPU: the C allocator's treatment of large tensors; which kernels run.

TensorFlow allocates CPU tensors with ``malloc``. glibc serves every block above 32 MiB (many
activations and gradients of a training step at 288 x 144) with a fresh ``mmap`` and returns it
to the kernel on ``free``, so each step pays to fault in and zero those pages again. With
TensorFlow's Eigen kernels (oneDNN off) the ResNet-50 baseline step at 288 x 144 ran 1.3 to 1.7
times faster once :func:`tune_allocator` made glibc keep freed memory for reuse; with oneDNN it
ran 4% slower (``benchmarks/results.md``), so by default the allocator is tuned only where
oneDNN will be off (:func:`onednn_expected`, known before TensorFlow loads). The entry points
(training, evaluation, export, the server, the benchmarks) call it before TensorFlow starts its
threads; ``LBA_TF_MALLOC=tuned`` or ``=system`` overrides the choice.
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


ALLOCATORS = ("auto", "tuned", "system")
"""Values of ``LBA_TF_MALLOC``: ``auto`` (the default) tunes where oneDNN will be off."""

ONEDNN_CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
"""CPU flags on which TensorFlow's Linux x86 builds turn oneDNN on by default."""


def cpu_flags() -> set[str]:
    """The flags ``/proc/cpuinfo`` lists for the first CPU (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def onednn_expected(environ=None, flags=None) -> bool:
    """Whether TensorFlow will run its oneDNN kernels, decided as it decides, before it loads.

    ``TF_ENABLE_ONEDNN_OPTS`` (``1``/``true`` or ``0``/``false``) decides when set; otherwise
    oneDNN is on for Linux on CPUs with any of :data:`ONEDNN_CPU_FLAGS`. Once TensorFlow has
    loaded, :func:`onednn_enabled` tells what it did.

    Args:
        environ: the environment (default ``os.environ``).
        flags: the CPU's flags (default :func:`cpu_flags`).
    """
    environ = os.environ if environ is None else environ
    value = environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    flags = cpu_flags() if flags is None else flags
    return sys.platform.startswith("linux") and any(flag in flags for flag in ONEDNN_CPU_FLAGS)


def tune_allocator() -> str:
    """Make glibc's malloc reuse freed large blocks instead of returning them; idempotent.

    Call it before TensorFlow is imported. Memory freed by one training step is reused by the
    next, so the process's resident size stays near its peak instead of falling between steps.

    Returns:
        ``"tuned"``; ``"system"`` where oneDNN will run (``LBA_TF_MALLOC=auto``, the default),
        with ``LBA_TF_MALLOC=system``, or where the C library is not glibc (macOS, musl), where
        nothing is changed.

    Raises:
        ValueError: ``LBA_TF_MALLOC`` holds something other than :data:`ALLOCATORS`.
    """
    if _state["mode"] is not None:
        return _state["mode"]
    wanted = os.environ.get(ENV_VAR, "auto")
    if wanted not in ALLOCATORS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(ALLOCATORS)}, got {wanted!r}")
    if wanted == "auto":
        wanted = "system" if onednn_expected() else "tuned"
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
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it
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


def set_determinism(enabled: bool) -> None:
    """Turn TensorFlow's op determinism on (or off), process-wide: every op then runs a kernel
    whose result does not depend on thread timing, and an op that has none raises instead of
    running; ``train.deterministic`` chooses. Together with the seeded, step-indexed data
    pipeline it makes a run a function of its seed, config and machine."""
    # the public API has only the switch on; off and the query live beside it
    from tensorflow.python.framework import config

    if enabled:
        config.enable_op_determinism()
    else:
        config.disable_op_determinism()


def determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on in this process."""
    from tensorflow.python.framework import config

    return bool(config.is_op_determinism_enabled())


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TensorFloat-32 for float32 matmuls and convolutions, process-wide.

    TensorFlow allows it by default on Ampere and newer GPUs, where float32 inputs are then
    rounded to 10 bits of mantissa inside those ops; ``train.tf32`` chooses. No effect on CPUs
    or older GPUs.
    """
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(enabled)
