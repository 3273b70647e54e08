"""The tiny synthetic configuration the end-to-end tests run on (seconds on a CPU)."""

TINY_OVERRIDES = [
    "data.synthetic.num_train_ids=8",
    "data.synthetic.num_test_ids=4",
    "data.synthetic.images_per_camera=2",
    "data.synthetic.image_height=32",
    "data.synthetic.image_width=16",
    "data.image_height=32",
    "data.image_width=16",
    "data.num_identities=3",
    "data.num_instances=2",
    "data.eval_trials=2",
    "model.depth=18",
    "model.width=4",
    "train.epochs=2",
    "train.steps_per_epoch=2",
    "train.warmup_epochs=1",
    "train.milestones=[1]",
    "train.eval_every=1",
    "train.checkpoint_every=1",
    "train.jit_compile=false",
]


def set_args(overrides):
    """``["--set", a, "--set", b, ...]`` for a command line."""
    return [arg for item in overrides for arg in ("--set", item)]
