"""Logging: the package logger and TensorFlow's native log level, set once per program."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("lba_tf")


def setup_logging(verbose: bool = False) -> logging.Logger:
    """Configure the ``lba_tf`` logger; silence TensorFlow's C++ logs unless ``verbose``.

    Call it before TensorFlow is imported: the C++ log level is read at import time.

    Args:
        verbose: debug-level package logs and TensorFlow's own INFO/WARNING output.

    Returns:
        The package logger.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    if not verbose:
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        import_tensorflow_quietly()
    return logger


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the native stderr closed: its CUDA stub writes lines at load time
    (before absl logging is initialised) that no log level silences. Python errors still raise."""
    if "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
