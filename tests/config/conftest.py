"""Config fixtures: a child config inheriting the real recipe."""

import pytest

from lba_tf.config import CONFIG_DIR


@pytest.fixture
def child(tmp_path):
    """A child config inheriting the real base recipe through a relative path."""
    (tmp_path / "base.yaml").write_text((CONFIG_DIR / "base.yaml").read_text())
    path = tmp_path / "child.yaml"
    path.write_text("base: base.yaml\ntrain:\n  lr: 0.2\n")
    return path
