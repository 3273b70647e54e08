"""Data: dataset readers, the built-in synthetic set, the identity sampler and the tf.data pipeline,
with the checks a training set passes before any image is decoded and the errors data raise."""
