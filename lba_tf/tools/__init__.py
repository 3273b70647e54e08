"""Tools: weight conversion from PyTorch checkpoints."""
