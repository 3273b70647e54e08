"""Export: the trained encoder as a SavedModel for TensorFlow Serving."""
