"""Losses: batch-hard triplet, identity cross-entropy, dense triplet of the alignment."""
