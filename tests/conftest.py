"""Test-wide settings: quiet TensorFlow, CPU only, the programs' allocator settings; and, where
``LBA_REQUIRE_TORCH=1`` (CI sets it), a test skipped because torch does not import fails instead."""

import os
import re

import pytest

from lba_tf.runtime import tune_allocator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
tune_allocator()  # as the entry points do, before TensorFlow loads

REQUIRE_TORCH = "LBA_REQUIRE_TORCH"
"""Environment variable: ``1`` turns a skip for a failed ``import torch`` into a failure."""
_TORCH_IMPORT_SKIP = re.compile(r"could not import 'torch(\.[\w.]+)?'")
"""The reason ``pytest.importorskip("torch")`` (or of a torch submodule) gives when it skips."""


def _require_torch(report) -> None:
    """Make ``report`` a failure if it is a skip for a failed torch import and torch is required."""
    if not report.skipped or os.environ.get(REQUIRE_TORCH) != "1" or not isinstance(report.longrepr, tuple):
        return
    reason = report.longrepr[2]
    if _TORCH_IMPORT_SKIP.search(reason):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_TORCH}=1: torch is required, but this was skipped ({reason})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _require_torch(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _require_torch(report)
    return report
