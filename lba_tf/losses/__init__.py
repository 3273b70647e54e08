"""Losses: batch-hard triplet, identity cross-entropy, dense triplet; composed by ``LbAModel.loss_terms``."""
