"""Training: optimizer, learning-rate schedule, the custom train step and the training loop."""
