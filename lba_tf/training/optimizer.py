"""The recipe's optimizer: SGD with torch.optim.SGD's semantics (coupled L2 weight decay, per-group
learning rates) and ``build_optimizer``, which makes it from a config."""

from __future__ import annotations

import re
from collections.abc import Mapping

import keras
from keras import ops

from lba_tf.config import TrainConfig
from lba_tf.training.schedule import WarmupStepSchedule


@keras.saving.register_keras_serializable(package="lba_tf")
class TorchSGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent that updates exactly as ``torch.optim.SGD`` does.

    For each variable ``p`` with gradient ``g``, learning rate ``lr`` (the schedule's rate times
    the variable's scale) and momentum buffer ``b`` (zero at the start)::

        g = g + weight_decay * p          # coupled L2, added to the gradient
        b = momentum * b + g
        g = g + momentum * b if nesterov else b
        p = p - lr * g

    Keras' own SGD folds the rate into the buffer and its ``weight_decay`` is decoupled, so both
    differ from torch once the rate changes or momentum is on; the recipe's numbers assume torch.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` of the step counter.
        momentum: momentum factor in [0, 1].
        nesterov: Nesterov momentum.
        weight_decay: L2 coefficient added to every gradient (torch's ``weight_decay``).
        lr_scales: ordered mapping of regular expressions to learning-rate scales; a variable
            takes the scale of the first pattern that ``re.search`` finds in its path, else 1.0.
            The recipe uses ``{"(^|/)(bnneck|classifier)/": 1.0, ".": 0.1}``.
        name: the optimizer's name.

    Examples:

    >>> opt = TorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
    ...                lr_scales={"classifier/": 1.0, ".": 0.1})
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        lr_scales: Mapping[str, float] | None = None,
        name: str = "torch_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(weight_decay)
        self.lr_scales = dict(lr_scales or {})
        self._patterns = [(re.compile(p), float(s)) for p, s in self.lr_scales.items()]

    def lr_scale_of(self, variable) -> float:
        """The learning-rate scale of ``variable``, from the first matching pattern."""
        for pattern, scale in self._patterns:
            if pattern.search(variable.path):
                return scale
        return 1.0

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum") if self.momentum else []
        self._scales = [self.lr_scale_of(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype) * self._scales[index]
        grad = ops.cast(gradient, variable.dtype)
        if self.l2:
            grad = grad + self.l2 * variable
        if self.momentum:
            buf = self.momentums[index]
            self.assign(buf, buf * self.momentum + grad)
            grad = grad + self.momentum * buf if self.nesterov else buf
        self.assign_sub(variable, lr * grad)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.l2, "lr_scales": self.lr_scales}
        )
        return config


HEAD_LAYERS = r"(^|/)(bnneck|classifier)/"
"""Variables that train at the base rate; everything else at ``train.backbone_lr_scale`` x."""


def build_optimizer(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD of the recipe: torch semantics, warm-up/step schedule, 0.1x rate for the backbone."""
    schedule = WarmupStepSchedule(train.lr, steps_per_epoch, train.warmup_epochs, train.milestones, train.lr_decay)
    optimizer = TorchSGD(
        schedule,
        momentum=train.momentum,
        nesterov=train.nesterov,
        weight_decay=train.weight_decay,
        lr_scales={HEAD_LAYERS: 1.0, ".": train.backbone_lr_scale},
    )
    if train.precision == "mixed_float16":
        # named, not auto-numbered: checkpoints key its variables by path, and a second optimizer in
        # a process would otherwise be "loss_scale_optimizer_1" and restore nothing
        optimizer = LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
    return optimizer


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling, with a step it skips (non-finite float16 gradients) counted in
    ``iterations``, as tf.keras counted it: the global step, the learning-rate schedule and the
    checkpoints' numbers follow the loop's steps whether or not an update was applied."""

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.iterations.assign_add(1)
