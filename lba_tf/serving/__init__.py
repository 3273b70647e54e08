"""Serving: a local TensorFlow-Serving-compatible gRPC server and the client."""
