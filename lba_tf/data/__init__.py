"""Data: dataset readers, the built-in synthetic set, the identity sampler and the tf.data pipeline."""
