"""Evaluation: re-identification metrics and protocols, feature extraction, re-ranking."""

from lba_tf.evaluation.metrics import evaluate, evaluate_features, mean_over_trials

__all__ = ["evaluate", "evaluate_features", "mean_over_trials"]
