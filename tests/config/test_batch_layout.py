"""The batch layout: the full method needs P - 1 >= K, checked from the config alone."""

import pytest

from lba_tf.config import CONFIG_DIR, ConfigError, check_batch_layout, load_config


def _config(p, k, method="full"):
    return load_config(None, [f"data.num_identities={p}", f"data.num_instances={k}", f"model.method={method}"])


@pytest.mark.parametrize("name", ["base.yaml", "synthetic.yaml", "sysu.yaml", "regdb.yaml", "llcm.yaml"])
def test_the_recipes_layouts_are_accepted(name):
    check_batch_layout(load_config(CONFIG_DIR / name))


def test_full_method_needs_more_other_identities_than_instances():
    accepted = set()
    for p in range(2, 7):
        for k in range(1, 7):
            try:
                check_batch_layout(_config(p, k))
                accepted.add((p, k))
            except ConfigError:
                pass
    assert accepted == {(p, k) for p in range(2, 7) for k in range(1, 7) if k <= p - 1}


def test_baseline_has_no_alignment_and_no_limit():
    for p, k in [(2, 1), (2, 4), (3, 3), (8, 16)]:
        check_batch_layout(_config(p, k, "baseline"))


def test_the_error_names_both_settings_and_what_satisfies_the_rule():
    with pytest.raises(ConfigError) as error:
        check_batch_layout(_config(4, 4))
    assert str(error.value) == (
        "data.num_identities=4 with data.num_instances=4: model.method=full pairs each image with images of 4 "
        "distinct other identities of its batch, so it needs data.num_identities - 1 >= data.num_instances; set "
        "data.num_identities to at least 5, data.num_instances to at most 3, or model.method=baseline"
    )
    check_batch_layout(_config(5, 4))
    check_batch_layout(_config(4, 3))


def test_the_rule_is_the_alignments_own():
    from lba_tf.models.alignment import check_batch_layout as alignment_check

    for p in range(2, 6):
        for k in range(1, 6):
            try:
                alignment_check(p, k)
                model_accepts = True
            except ValueError:
                model_accepts = False
            try:
                check_batch_layout(_config(p, k))
                config_accepts = True
            except ConfigError:
                config_accepts = False
            assert model_accepts == config_accepts, (p, k)
