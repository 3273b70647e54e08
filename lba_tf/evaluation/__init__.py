"""Evaluation: protocols, re-identification metrics, results, feature extraction, re-ranking."""

from lba_tf.evaluation.metrics import evaluate, evaluate_features
from lba_tf.evaluation.protocols import (
    PROTOCOLS,
    EvaluationProtocol,
    LLCMProtocol,
    RegDBProtocol,
    SYSUMM01Protocol,
    get_protocol,
)
from lba_tf.evaluation.results import DirectionResult, Metrics, mean_over_trials

__all__ = [
    "PROTOCOLS",
    "DirectionResult",
    "EvaluationProtocol",
    "LLCMProtocol",
    "Metrics",
    "RegDBProtocol",
    "SYSUMM01Protocol",
    "evaluate",
    "evaluate_features",
    "get_protocol",
    "mean_over_trials",
]
