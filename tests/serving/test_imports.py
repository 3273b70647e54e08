"""Importing the server's modules has no side effects: no threads, servers, arguments, logging or allocator.

Each check runs in a fresh interpreter, so that nothing this test process imported or configured hides one.
"""

import json
import os
import subprocess
import sys

import pytest

LIGHT = ["lba_tf.serving.server", "lba_tf.serving.batching", "lba_tf.serving.errors", "lba_tf.serving.http_body"]
"""Modules that import without TensorFlow: the command line's ``--help`` and the allocator come first."""

HEAVY = [
    "lba_tf.serving.inputs",
    "lba_tf.serving.servable",
    "lba_tf.serving.versions",
    "lba_tf.serving.core",
    "lba_tf.serving.grpc_api",
    "lba_tf.serving.json_tensor",
    "lba_tf.serving.rest_api",
]

_PROBE = """
import importlib, json, logging, os, signal, sys, threading

def state():
    return {"threads": sorted(t.name for t in threading.enumerate()),
            "logging": [len(logging.getLogger(name).handlers) for name in ("", "lba_tf")]
                       + [logging.getLogger("lba_tf").level, logging.getLogger("tensorflow").level],
            "environ": {k: v for k, v in os.environ.items() if k.startswith(("TF_", "ABSL_"))},
            "signals": [str(signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGINT)]}

before = state()
for name in sys.argv[1:]:
    importlib.import_module(name)
from lba_tf.runtime import allocator_mode
print(json.dumps({"before": before, "after": state(), "tensorflow": "tensorflow" in sys.modules,
                  "allocator": allocator_mode()}))
"""


def _import_in_fresh_interpreter(modules):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # the module names double as command-line arguments: a module parsing sys.argv at import would fail
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("modules", [LIGHT, LIGHT + HEAVY], ids=["light", "all"])
def test_import_has_no_side_effects(modules):
    report = _import_in_fresh_interpreter(modules)
    assert report["after"] == report["before"]
    assert report["allocator"] is None  # tune_allocator is the entry point's call
    assert report["tensorflow"] == (modules != LIGHT)
