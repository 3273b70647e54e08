"""Evaluation: re-identification metrics and protocols, feature extraction, re-ranking."""
