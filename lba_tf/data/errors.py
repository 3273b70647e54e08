"""Data errors: training or test data that cannot be used as configured."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be used as configured: a malformed dataset folder, an undecodable image,
    records that cannot fill the batches. The message is one line naming the file, identity or
    setting, and the fix; the command-line programs print it as it is."""


class MissingImagesError(DataError, FileNotFoundError):
    """Image files that a dataset listed do not exist."""
