"""Test-only PyTorch reference modules for parity checks."""
