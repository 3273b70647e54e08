"""The allocator settings: large blocks stay in the heap, the switch, its errors."""

import json
import os
import subprocess
import sys

import pytest

from lba_tf import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# allocate and free 100 MiB, then report glibc's count of mmap'd bytes while a second block is held
_PROBE = """
import ctypes, json, sys
from lba_tf.runtime import tune_allocator
mode = tune_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
size = 100 * 2**20
libc.free(libc.malloc(size))
block = libc.malloc(size)
info = libc.mallinfo2()
print(json.dumps({"mode": mode, "mmapped": info.hblkhd, "heap": info.arena}))
"""


def _probe(malloc_env: str | None, onednn: str = "0") -> dict:
    env = {k: v for k, v in os.environ.items() if k != runtime.ENV_VAR}
    env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    if malloc_env is not None:
        env[runtime.ENV_VAR] = malloc_env
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return json.loads(out)


glibc = pytest.mark.skipif(runtime._glibc_mallopt() is None, reason="needs glibc")


@glibc
def test_tuned_allocator_serves_large_blocks_from_the_heap():
    tuned = _probe(None)
    assert tuned["mode"] == "tuned"
    assert tuned["mmapped"] < 100 * 2**20  # only what Python mapped before the tuning
    assert tuned["heap"] >= 100 * 2**20


@glibc
def test_system_allocator_is_left_as_glibc_sets_it():
    system = _probe("system")
    assert system["mode"] == "system"
    assert system["mmapped"] >= 100 * 2**20  # glibc maps blocks this large one by one


@glibc
def test_by_default_the_allocator_is_tuned_only_where_onednn_is_off():
    # measured: x1.31 with TensorFlow's Eigen kernels, 4% slower with oneDNN
    assert _probe(None, onednn="1")["mode"] == "system"
    assert _probe(None, onednn="0")["mode"] == "tuned"
    assert _probe("tuned", onednn="1")["mode"] == "tuned"


def test_onednn_is_expected_as_tensorflow_decides():
    assert runtime.onednn_expected({"TF_ENABLE_ONEDNN_OPTS": "1"}, flags=set())
    assert runtime.onednn_expected({"TF_ENABLE_ONEDNN_OPTS": "true"}, flags=set())
    assert not runtime.onednn_expected({"TF_ENABLE_ONEDNN_OPTS": "0"}, flags={"avx512_vnni"})
    linux = sys.platform.startswith("linux")
    assert runtime.onednn_expected({}, flags={"avx2", "avx512f", "avx512_vnni"}) == linux
    assert runtime.onednn_expected({}, flags={"avx2", "amx_tile"}) == linux
    assert not runtime.onednn_expected({}, flags={"avx2", "fma", "avx512f"})  # AVX-512 alone: off


def test_the_expectation_agrees_with_the_loaded_tensorflow():
    # make test runs with TF_ENABLE_ONEDNN_OPTS set each way; unset, this CPU's flags decide
    assert runtime.onednn_expected() == runtime.onednn_enabled()


def test_bad_setting_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setattr(runtime, "_state", {"mode": None})
    monkeypatch.setenv(runtime.ENV_VAR, "jemalloc")
    with pytest.raises(ValueError, match="LBA_TF_MALLOC must be one of auto, tuned, system, got 'jemalloc'"):
        runtime.tune_allocator()


def test_entry_points_refuse_a_bad_setting_before_any_work():
    env = {**os.environ, runtime.ENV_VAR: "fast"}
    result = subprocess.run(
        [sys.executable, "-m", "lba_tf.train", "--max-steps", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "LBA_TF_MALLOC must be one of auto, tuned, system, got 'fast'" in result.stderr


def test_set_tf32_switches_tensorflows_process_wide_setting():
    import tensorflow as tf

    from lba_tf.runtime import set_tf32

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        set_tf32(False)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        set_tf32(True)
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
